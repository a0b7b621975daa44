package node

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"testing"
)

// TestAppendPROXYv2 checks the header byte by byte against the layout of
// proxy-protocol.txt section 2.2: 12-byte signature, version/command,
// family/transport, big-endian length of what follows, source and
// destination addresses, source and destination ports, then TLVs.
func TestAppendPROXYv2(t *testing.T) {
	sig := "\r\n\r\n\x00\r\nQUIT\n"
	ap := netip.MustParseAddrPort
	cases := []struct {
		name     string
		src, dst netip.AddrPort
		tlvs     []ppTLV
		want     []byte
		wantErr  string
	}{
		{name: "ipv4 no tlv", src: ap("10.0.0.1:43210"), dst: ap("10.0.0.2:8080"),
			want: cat(sig, "\x21\x11", "\x00\x0c",
				"\x0a\x00\x00\x01", "\x0a\x00\x00\x02", "\xa8\xca", "\x1f\x90")},
		{name: "ipv4 with identity tlv", src: ap("127.0.0.1:1"), dst: ap("127.0.0.2:65535"),
			tlvs: []ppTLV{{Type: 0xD0, Value: []byte("spiffe://td/ns/a/sa/b")}},
			want: cat(sig, "\x21\x11", "\x00\x24", // 12 + 3 + 21
				"\x7f\x00\x00\x01", "\x7f\x00\x00\x02", "\x00\x01", "\xff\xff",
				"\xd0\x00\x15", "spiffe://td/ns/a/sa/b")},
		{name: "ipv4-mapped source is ipv4", src: ap("[::ffff:10.1.2.3]:80"), dst: ap("10.0.0.2:81"),
			want: cat(sig, "\x21\x11", "\x00\x0c",
				"\x0a\x01\x02\x03", "\x0a\x00\x00\x02", "\x00\x50", "\x00\x51")},
		{name: "ipv6", src: ap("[2001:db8::1]:443"), dst: ap("[::1]:15088"),
			tlvs: []ppTLV{{Type: 0xD0, Value: nil}},
			want: cat(sig, "\x21\x21", "\x00\x27", // 36 + 3
				"\x20\x01\x0d\xb8"+strings.Repeat("\x00", 11)+"\x01",
				strings.Repeat("\x00", 15)+"\x01", "\x01\xbb", "\x3a\xf0",
				"\xd0\x00\x00")},
		{name: "mixed families are written as ipv6", src: ap("10.0.0.1:1"), dst: ap("[fd00::2]:2"),
			want: cat(sig, "\x21\x21", "\x00\x24",
				strings.Repeat("\x00", 10)+"\xff\xff\x0a\x00\x00\x01",
				"\xfd\x00"+strings.Repeat("\x00", 13)+"\x02", "\x00\x01", "\x00\x02")},
		{name: "unknown source", dst: ap("10.0.0.2:80"), wantErr: "must both be known"},
		{name: "oversized tlv", src: ap("10.0.0.1:1"), dst: ap("10.0.0.2:2"),
			tlvs: []ppTLV{{Type: 0xD0, Value: make([]byte, 70000)}}, wantErr: "TLV 0xD0: 70000 bytes"},
		{name: "oversized body", src: ap("10.0.0.1:1"), dst: ap("10.0.0.2:2"),
			tlvs: []ppTLV{{Type: 1, Value: make([]byte, 40000)}, {Type: 2, Value: make([]byte, 40000)}}, wantErr: "over the 65535 limit"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := appendPROXYv2([]byte("keep"), c.src, c.dst, c.tlvs...)
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err = %v, want %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(got, []byte("keep")) {
				t.Fatalf("existing bytes lost: %q", got)
			}
			if got = got[4:]; !bytes.Equal(got, c.want) {
				t.Fatalf("header\n got %x\nwant %x", got, c.want)
			}
			// The independent reader used by the delivery tests agrees.
			h, err := readPROXYv2(bytes.NewReader(got))
			if err != nil {
				t.Fatal(err)
			}
			if h.src.Addr().Unmap() != c.src.Addr().Unmap() || h.src.Port() != c.src.Port() ||
				h.dst.Addr().Unmap() != c.dst.Addr().Unmap() || h.dst.Port() != c.dst.Port() {
				t.Errorf("read back %v -> %v, want %v -> %v", h.src, h.dst, c.src, c.dst)
			}
		})
	}
}

func cat(parts ...string) []byte { return []byte(strings.Join(parts, "")) }

// ppHeader is what readPROXYv2 found.
type ppHeader struct {
	src, dst netip.AddrPort
	tlvs     map[byte]string
}

// readPROXYv2 is the application side of a PROXY tunnel in the tests: a
// minimal v2 reader written from the spec, strict about every field.
func readPROXYv2(r io.Reader) (ppHeader, error) {
	var h ppHeader
	fixed := make([]byte, 16)
	if _, err := io.ReadFull(r, fixed); err != nil {
		return h, fmt.Errorf("header: %w", err)
	}
	if string(fixed[:12]) != "\r\n\r\n\x00\r\nQUIT\n" {
		return h, fmt.Errorf("bad signature %q", fixed[:12])
	}
	if fixed[12] != 0x21 {
		return h, fmt.Errorf("version/command 0x%02x, want v2 PROXY", fixed[12])
	}
	body := make([]byte, binary.BigEndian.Uint16(fixed[14:]))
	if _, err := io.ReadFull(r, body); err != nil {
		return h, fmt.Errorf("body: %w", err)
	}
	var alen int
	switch fixed[13] {
	case 0x11:
		alen = 4
	case 0x21:
		alen = 16
	default:
		return h, fmt.Errorf("family/transport 0x%02x", fixed[13])
	}
	if len(body) < 2*alen+4 {
		return h, errors.New("body shorter than the addresses")
	}
	sa, _ := netip.AddrFromSlice(body[:alen])
	da, _ := netip.AddrFromSlice(body[alen : 2*alen])
	h.src = netip.AddrPortFrom(sa, binary.BigEndian.Uint16(body[2*alen:]))
	h.dst = netip.AddrPortFrom(da, binary.BigEndian.Uint16(body[2*alen+2:]))
	h.tlvs = map[byte]string{}
	for rest := body[2*alen+4:]; len(rest) > 0; {
		if len(rest) < 3 {
			return h, errors.New("truncated TLV")
		}
		n := int(binary.BigEndian.Uint16(rest[1:]))
		if len(rest) < 3+n {
			return h, errors.New("TLV longer than the body")
		}
		h.tlvs[rest[0]] = string(rest[3 : 3+n])
		rest = rest[3+n:]
	}
	return h, nil
}
