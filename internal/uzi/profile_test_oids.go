//go:build !production

package uzi

// Naming-scheme OIDs of Vouch's test PKI (pkcs11-mocks), one per card type
// like the production register's, and the test certificate policies. They
// are only compiled into non-production builds.
const (
	TestOIDCA         = "2.16.528.1.1003.1.3.5.9.2" // Z
	TestOIDCANamed    = "2.16.528.1.1003.1.3.5.9.3" // N
	TestOIDCANameless = "2.16.528.1.1003.1.3.5.9.4" // M
	TestOIDCAServer   = "2.16.528.1.1003.1.3.5.9.5" // S

	TestPolicyAuth = "2.16.528.1.1003.1.2.9.1"
	TestPolicySign = "2.16.528.1.1003.1.2.9.2"
	// TestRootPolicy marks the test PKI's root; see Profile.CheckRoot.
	TestRootPolicy = testRootPolicy
)

// Test is the profile for the cards that pkcs11-mocks makes.
func Test() Profile {
	return Profile{
		name: "test",
		oidCA: map[CardType]string{CardCareProvider: TestOIDCA, CardNamedEmployee: TestOIDCANamed,
			CardNameless: TestOIDCANameless, CardServer: TestOIDCAServer},
		policies:         map[Purpose]string{PurposeLogin: TestPolicyAuth, PurposeVouch: TestPolicySign},
		rootPolicy:       testRootPolicy,
		vouchProfessions: DefaultVouchProfessions(),
	}
}

func extraProfiles() map[string]Profile { return map[string]Profile{"test": Test()} }
