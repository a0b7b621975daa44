// Package node is the ambient node proxy as a library: what ztunnel does
// for the pods of one node, independent of how their connections are
// captured.
//
// A Proxy reads the Workload API view of a state.Store (workloads,
// services, authorization policies) and offers two entry points:
//
//   - HandleOutbound takes a captured connection from a local source
//     workload with its original destination, resolves that destination
//     (a service VIP:port to one healthy endpoint with the target port
//     mapped, or a workload IP:port to that workload), and either tunnels
//     it over HBONE to the destination's 15008 presenting the SOURCE
//     workload's certificate, or dials the destination directly.
//   - Inbound (the Dial hook of an hbone.Server on 15008) checks that the
//     CONNECT target is a workload of this node, that a workload with a
//     waypoint is reached from that waypoint, enforces its Authorization
//     policies with the peer's SPIFFE ID, and dials the pod in plaintext
//     (to the workload's application_tunnel port, opening with a PROXY v2
//     header carrying the peer, when it asks for one: apptunnel.go).
//     When the decision depends on L7 matches (meshlet's extension of the
//     Workload API) it serves HTTP on the stream instead (l7.go) and
//     judges each request. InboundServer builds such a server presenting
//     one local workload's identity (in-pod mode runs one per pod).
//
// Certificates come from an Identities implementation: CAIdentities (the
// built-in CA) or IstioCAIdentities (istiod with ImpersonatedIdentity),
// one rotating identity.Source per SPIFFE ID, created on first use and
// released when no workload of the node uses it any more (release.go).
//
// Accepting connections (listeners, network namespaces, original
// destination lookup) belongs to the caller: inpod and cmd/ztunnel wire
// it. node imports state, policy, hbone and identity; it must not import
// xds, dataplane, capture, inpod, admin or cmd.
package node
