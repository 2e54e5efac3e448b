//go:build !production

package uzi

// TestOIDCA is the naming-scheme OID of Vouch's test PKI (pkcs11-mocks). It is
// only compiled into non-production builds.
const TestOIDCA = "2.16.528.1.1003.1.3.5.9.2"

// Test is the profile for the cards that pkcs11-mocks makes.
func Test() Profile {
	return Profile{Name: "test", CAOIDs: []string{TestOIDCA}, VouchProfessions: DefaultVouchProfessions}
}

func extraProfiles() map[string]Profile { return map[string]Profile{"test": Test()} }
