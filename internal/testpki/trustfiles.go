package testpki

import (
	"maps"
	"slices"
	"strings"

	"github.com/vouch-nl/vouch/internal/uzi"
)

// TrustFiles names the files a verifier of a manifest's cards is configured
// with. It holds plain paths, so that testpki need not import trust (whose
// tests import testpki).
type TrustFiles struct {
	Roots      []string
	IssuingCAs []IssuingCAFile // in CA name order
	CRLs       []string        // in CA name order
}

// IssuingCAFile is an issuing CA's certificate file and the card type the
// CA issues.
type IssuingCAFile struct {
	Type uzi.CardType
	File string
}

// TrustFiles returns the files trusting m's cards: the root, the issuing CAs
// of CATypes (so not the CA nobody trusts), and every CRL.
func (m *Manifest) TrustFiles() TrustFiles {
	f := TrustFiles{Roots: []string{m.RootCA}}
	for _, name := range slices.Sorted(maps.Keys(m.CAs)) {
		if typ, ok := CATypes[name]; ok {
			f.IssuingCAs = append(f.IssuingCAs, IssuingCAFile{Type: typ, File: m.CAs[name]})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(m.CRLs)) {
		f.CRLs = append(f.CRLs, m.CRLs[name])
	}
	return f
}

// CAs returns the issuing CA files by card type, as trust.Config.CAs holds
// them.
func (f TrustFiles) CAs() map[string]string {
	cas := make(map[string]string, len(f.IssuingCAs))
	for _, ca := range f.IssuingCAs {
		cas[string(ca.Type)] = ca.File
	}
	return cas
}

// CAsEnv returns the issuing CAs as VOUCH_UZI_CAS spells them: "Z:file,N:file".
func (f TrustFiles) CAsEnv() string {
	cas := make([]string, len(f.IssuingCAs))
	for i, ca := range f.IssuingCAs {
		cas[i] = string(ca.Type) + ":" + ca.File
	}
	return strings.Join(cas, ",")
}

// Env is the configuration of a test deployment trusting m's cards, as
// environment variables in a fixed order: the trust files, the back end's
// attestation key, and each card's signature key as VOUCH_TEST_CARD_<NAME>.
func (m *Manifest) Env() [][2]string {
	files := m.TrustFiles()
	vars := [][2]string{
		{"SOFTHSM2_CONF", m.SoftHSMConf},
		{"VOUCH_CARD_PROFILE", "test"},
		{"VOUCH_UZI_ROOTS", strings.Join(files.Roots, ",")},
		{"VOUCH_UZI_CAS", files.CAsEnv()},
		{"VOUCH_UZI_CRLS", strings.Join(files.CRLs, ",")},
		{"VOUCH_ATTESTATION_KEYS", m.Backend.AttestationPub},
		{"VOUCH_ATTESTATION_URI", m.Backend.AttestationURI},
		{"VOUCH_EXPORT_KEY_URIS", m.Backend.ExportURI},
		// Not read by the server roles: the export key phones have built in.
		{"VOUCH_EXPORT_PUBLIC_KEY", m.Backend.ExportPub},
	}
	for _, c := range m.Cards {
		vars = append(vars, [2]string{"VOUCH_TEST_CARD_" + strings.ToUpper(strings.ReplaceAll(c.Name, "-", "_")), c.SignURI})
	}
	return vars
}
