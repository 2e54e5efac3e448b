//go:build production

package uzi

// A production build compiles in no profile but Production.
func extraProfiles() map[string]Profile { return nil }
