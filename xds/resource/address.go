package resource

import (
	"errors"
	"net/netip"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// socketAddress returns the TCP socket address of a core Address: the host
// string (not yet parsed) and the port. Pipes, internal addresses, UDP and
// named ports are rejected because nothing downstream can honour them.
func socketAddress(a *corev3.Address) (host string, port uint32, err error) {
	if a == nil {
		return "", 0, errors.New("is required")
	}
	switch a.GetAddress().(type) {
	case *corev3.Address_SocketAddress:
	case *corev3.Address_Pipe:
		return "", 0, errAt("pipe", "unix domain socket addresses are not supported")
	case *corev3.Address_EnvoyInternalAddress:
		return "", 0, errAt("envoy_internal_address", "internal addresses are not supported")
	default:
		return "", 0, errors.New("socket_address is required")
	}
	sa := a.GetSocketAddress()
	if sa.GetProtocol() != corev3.SocketAddress_TCP {
		return "", 0, errAt("socket_address.protocol", "%v is not supported, only TCP", sa.GetProtocol())
	}
	if sa.GetResolverName() != "" {
		return "", 0, errAt("socket_address.resolver_name", "custom resolvers are not supported")
	}
	switch sa.GetPortSpecifier().(type) {
	case *corev3.SocketAddress_PortValue:
	case *corev3.SocketAddress_NamedPort:
		return "", 0, errAt("socket_address.named_port", "named ports are not supported")
	default:
		return "", 0, errAt("socket_address.port_value", "is required")
	}
	if sa.GetPortValue() > 65535 {
		return "", 0, errAt("socket_address.port_value", "%d is out of range", sa.GetPortValue())
	}
	if sa.GetAddress() == "" {
		return "", 0, errAt("socket_address.address", "is required")
	}
	return sa.GetAddress(), sa.GetPortValue(), nil
}

// ipSocketAddress is socketAddress for places that need a literal IP
// (listeners, STATIC and EDS endpoints).
func ipSocketAddress(a *corev3.Address) (netip.AddrPort, error) {
	host, port, err := socketAddress(a)
	if err != nil {
		return netip.AddrPort{}, err
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, errAt("socket_address.address", "%q is not an IP address", host)
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
}

// cidrRange converts a CidrRange to a masked prefix.
func cidrRange(c *corev3.CidrRange) (netip.Prefix, error) {
	ip, err := netip.ParseAddr(c.GetAddressPrefix())
	if err != nil {
		return netip.Prefix{}, errAt("address_prefix", "%q is not an IP address", c.GetAddressPrefix())
	}
	ip = ip.Unmap()
	bits := ip.BitLen()
	if c.GetPrefixLen() != nil {
		bits = int(c.GetPrefixLen().GetValue())
	}
	if bits > ip.BitLen() {
		return netip.Prefix{}, errAt("prefix_len", "%d is too long for %s", bits, ip)
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.Prefix{}, errAt("prefix_len", "%v", err)
	}
	return p, nil
}

func cidrRanges(field string, cs []*corev3.CidrRange) ([]netip.Prefix, error) {
	if len(cs) == 0 {
		return nil, nil
	}
	out := make([]netip.Prefix, 0, len(cs))
	for i, c := range cs {
		p, err := cidrRange(c)
		if err != nil {
			return nil, atIndex(field, i, err)
		}
		out = append(out, p)
	}
	return out, nil
}
