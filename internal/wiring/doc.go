// Package wiring holds the few start-up steps that cmd/ztunnel and the
// embeddable library (the module's root package) must do identically:
// publishing a bootstrap's static resources into a state.Store, merging
// node descriptions, and naming the local identity. It is assembly, not
// policy: the packages it calls own the behaviour.
//
// wiring imports config, identity, state and xds. It must not import
// dataplane, httpproxy, admin or cmd: the callers choose which runtimes
// to build on top of the store.
package wiring
