// Package docs holds documents the programs serve: the phone API's OpenAPI
// description, which ingest serves at /openapi.yaml.
package docs

import _ "embed"

// OpenAPI is docs/openapi.yaml.
//
//go:embed openapi.yaml
var OpenAPI []byte
