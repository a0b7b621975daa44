package policy

import (
	"net/netip"
	"strings"
)

// FormatContext carries what the supported header formatters expand to.
type FormatContext struct {
	DownstreamRemote netip.AddrPort
	DownstreamLocal  netip.AddrPort
	UpstreamRemote   string
	Protocol         string // "HTTP/1.1", "HTTP/2"
	Hostname         string
}

// FormatValue expands %VAR% formatters in v; values without '%' are
// returned as is without allocating. Supported: %DOWNSTREAM_REMOTE_ADDRESS%,
// %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%, %DOWNSTREAM_LOCAL_ADDRESS%,
// %UPSTREAM_REMOTE_ADDRESS%, %PROTOCOL%, %HOSTNAME%. "%%" is a literal '%'.
// Unknown or unterminated formatters are left literal. A formatter whose
// value is unknown (zero address, nil context) expands to "", so with
// KeepEmptyValue=false the header is dropped, as Envoy does.
func FormatValue(v string, fc *FormatContext) string {
	i := strings.IndexByte(v, '%')
	if i < 0 {
		return v
	}
	var b strings.Builder
	b.Grow(len(v) + 32)
	for {
		b.WriteString(v[:i])
		v = v[i:] // starts with '%'
		if strings.HasPrefix(v, "%%") {
			b.WriteByte('%')
			v = v[2:]
		} else if j := strings.IndexByte(v[1:], '%'); j < 0 {
			b.WriteString(v)
			return b.String()
		} else {
			name := v[1 : 1+j]
			if !expand(&b, name, fc) {
				// Leave it literal but keep its closing '%' available to
				// start the next formatter, as in "%UNKNOWN%PROTOCOL%".
				b.WriteString(v[:1+j])
				v = v[1+j:]
			} else {
				v = v[2+j:]
			}
		}
		i = strings.IndexByte(v, '%')
		if i < 0 {
			b.WriteString(v)
			return b.String()
		}
	}
}

func expand(b *strings.Builder, name string, fc *FormatContext) bool {
	var ctx FormatContext
	if fc != nil {
		ctx = *fc
	}
	switch name {
	case "DOWNSTREAM_REMOTE_ADDRESS":
		writeAddrPort(b, ctx.DownstreamRemote)
	case "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
		if ctx.DownstreamRemote.Addr().IsValid() {
			b.WriteString(ctx.DownstreamRemote.Addr().String())
		}
	case "DOWNSTREAM_LOCAL_ADDRESS":
		writeAddrPort(b, ctx.DownstreamLocal)
	case "UPSTREAM_REMOTE_ADDRESS":
		b.WriteString(ctx.UpstreamRemote)
	case "PROTOCOL":
		b.WriteString(ctx.Protocol)
	case "HOSTNAME":
		b.WriteString(ctx.Hostname)
	default:
		return false
	}
	return true
}

func writeAddrPort(b *strings.Builder, ap netip.AddrPort) {
	if ap.Addr().IsValid() {
		b.WriteString(ap.String())
	}
}
