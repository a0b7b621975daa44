package demo

import "embed"

// Files holds every *.yaml file of this directory.
//
//go:embed *.yaml
var Files embed.FS
