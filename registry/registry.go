// Package registry holds the OpenLDAP configuration, schema, base entries and
// test-card fixtures of the development and test stand-in for the national
// UZI registry; it renders a slapd.conf, runs slapd (Server), and generates
// synthetic registers of any size (Generate).
package registry

import (
	"bytes"
	"crypto/rand"
	"crypto/sha1"
	"embed"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"text/template"
)

// Names fixed by base.ldif and the config template.
const (
	Suffix   = "dc=registry,dc=test"
	RootDN   = "cn=admin," + Suffix
	PeopleDN = "ou=people," + Suffix
)

// Debian's locations of the stock schemas and the slapd modules.
const (
	SchemaDir = "/etc/ldap/schema"
	ModuleDir = "/usr/lib/ldap"
)

//go:embed slapd.conf.tmpl vouch.schema base.ldif fixtures.ldif
var files embed.FS

// BaseLDIF returns the suffix entry and ou=people, for slapadd or ldapadd.
func BaseLDIF() []byte {
	b, err := files.ReadFile("base.ldif")
	if err != nil {
		panic(err) // embedded at build time; missing means a broken build
	}
	return b
}

// Schema returns vouch.schema.
func Schema() []byte {
	b, err := files.ReadFile("vouch.schema")
	if err != nil {
		panic(err)
	}
	return b
}

// WriteConfig writes slapd.conf and vouch.schema into dir, makes dir/data for
// the database, and returns the path of slapd.conf. Pid and args files go to
// dir too. rootPW is stored salted and hashed ({SSHA}).
func WriteConfig(dir, rootPW string) (confPath string, err error) {
	return writeConfig(dir, rootPW, false, false)
}

// writeConfig is WriteConfig; noSyncprov leaves out the syncprov overlay,
// to stand in for registers that do not offer syncrepl.
func writeConfig(dir, rootPW string, noSyncprov, withTLS bool) (confPath string, err error) {
	dir, err = filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("registry: %w", err)
	}
	dataDir := filepath.Join(dir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return "", fmt.Errorf("registry: data dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "vouch.schema"), Schema(), 0o600); err != nil {
		return "", fmt.Errorf("registry: write schema: %w", err)
	}
	tmpl, err := template.ParseFS(files, "slapd.conf.tmpl")
	if err != nil {
		return "", fmt.Errorf("registry: parse template: %w", err)
	}
	hashed, err := ssha(rootPW)
	if err != nil {
		return "", err
	}
	var tlsDir string
	if withTLS {
		if tlsDir, err = writeTLS(dir); err != nil {
			return "", err
		}
	}
	var buf bytes.Buffer
	err = tmpl.Execute(&buf, struct {
		SchemaDir, ModuleDir, RunDir, DataDir, Suffix, RootDN, RootPW, TLSDir string
		NoSyncprov                                                            bool
	}{
		TLSDir:     tlsDir,
		NoSyncprov: noSyncprov,
		SchemaDir:  SchemaDir,
		ModuleDir:  ModuleDir,
		RunDir:     dir,
		DataDir:    dataDir,
		Suffix:     Suffix,
		RootDN:     RootDN,
		RootPW:     hashed,
	})
	if err != nil {
		return "", fmt.Errorf("registry: render config: %w", err)
	}
	confPath = filepath.Join(dir, "slapd.conf")
	if err := os.WriteFile(confPath, buf.Bytes(), 0o600); err != nil {
		return "", fmt.Errorf("registry: write config: %w", err)
	}
	return confPath, nil
}

// ssha hashes a password the way slappasswd does by default: base64 of
// SHA-1(password || salt) || salt. Weak, but only for a throwaway test server,
// and it keeps the clear password out of the config file.
func ssha(pw string) (string, error) {
	salt := make([]byte, 8)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("registry: salt: %w", err)
	}
	h := sha1.New()
	h.Write([]byte(pw))
	h.Write(salt)
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(h.Sum(nil), salt...)), nil
}
