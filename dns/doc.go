// Package dns owns the DNS proxy that captured DNS (udp/tcp 53 redirected
// to 15053) lands on: a name table of mesh hostnames (from Istio's NDS
// NameTable, derived from the xDS snapshot when NDS is absent, and from
// node-mode services), answered locally with A/AAAA records in the forms
// Kubernetes clients use, and a forwarder with a bounded cache for every
// other name, sent to the resolv.conf upstreams.
//
// The table is rebuilt off the query path when a source changes and
// swapped atomically; a query reads it with one atomic load. A node-mode
// hostname keeps one candidate service per namespace with its VIPs by
// network; the query's source address (Config.Clients) picks one, as
// ztunnel does.
//
// dns imports state (read only) and dns/ndspb. It must not import
// dataplane, lb, policy, xds or capture: the binary wires it to the store
// and registers NDSWatcher on its xDS client, so NDS shares the one ADS
// connection.
package dns
