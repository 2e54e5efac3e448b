// Package web holds the back office's pages and static files, embedded into
// the vouch binary so a deployment is one file. The card login and the
// vouching pages arrive with their issues; for now it serves the landing
// page that tells a clinician where they are.
package web

import "embed"

// Static is served under /static/ and the landing page at /.
//
//go:embed static
var Static embed.FS
