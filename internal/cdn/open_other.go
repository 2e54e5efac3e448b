//go:build !linux

package cdn

import "os"

// beneath is openat2(2), which only Linux has; elsewhere the origin opens
// through an os.Root.
type beneath struct{}

func openBeneath(string) (*beneath, bool, error) { return nil, false, nil }

func (*beneath) open(string) (*os.File, error) { panic("cdn: no openat2") }

func (*beneath) close() error { return nil }
