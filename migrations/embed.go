// Package migrations holds the SQL schema migrations of Vouch in jackc/tern v2
// format, embedded so every binary and test migrates from the same files.
package migrations

import "embed"

// FS holds the migration files, named NNN_name.sql, applied in order by tern.
//
//go:embed *.sql
var FS embed.FS
