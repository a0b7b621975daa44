// Package demo holds the xDS resources `ztunnel demo` serves from its
// embedded control plane (see README.md for the file format). The YAML files
// are embedded so the binary runs the demo without a checkout; the demo
// copies them to a temporary directory so they can be watched and rewritten.
//
// demo imports nothing from meshlet.
package demo
