// Package config loads meshlet's bootstrap file: the subset of Envoy's
// bootstrap v3 (YAML or JSON) that says who this node is, which listeners and
// clusters exist before xDS, where the ADS server is and where admin listens.
// The file is validated once at load; the result is immutable.
//
// Static resources are decoded with xds/resource so a bootstrap listener and
// an xDS listener are validated identically. config imports state and
// xds/resource only; it must not import the xds client, dataplane, lb or
// policy.
package config
