//go:build !linux

package cdn

// beneath is openat2(2), which only Linux has; elsewhere the origin opens
// through an os.Root.
type beneath struct{}

func openBeneath(string) (*beneath, bool, error) { return nil, false, nil }

func (*beneath) open(string) (*file, error) { panic("cdn: no openat2") }

func closeFD(int) error { return nil }

func (*beneath) close() error { return nil }
