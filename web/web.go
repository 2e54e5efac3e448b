// Package web holds the back office's pages, scripts and styles, and the
// browser extension, embedded into the vouch binary so a deployment is one
// file and no page loads anything from elsewhere.
package web

import "embed"

// Static is served under /static/.
//
//go:embed static
var Static embed.FS

// Templates are the back office's pages (html/template): layout.html and
// one file per page.
//
//go:embed templates
var Templates embed.FS
