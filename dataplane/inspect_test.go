package dataplane

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
)

// clientHello returns the bytes a real crypto/tls client sends first.
func clientHello(t *testing.T, cfg *tls.Config) []byte {
	t.Helper()
	cli, srv := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = tls.Client(cli, cfg).Handshake()
	}()
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(srv, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, int(hdr[3])<<8|int(hdr[4]))
	if _, err := io.ReadFull(srv, body); err != nil {
		t.Fatal(err)
	}
	srv.Close()
	cli.Close()
	<-done
	return append(hdr, body...)
}

// splitRecords re-frames one handshake record as several smaller records,
// as some clients do with large ClientHellos.
func splitRecords(rec []byte, size int) []byte {
	body := rec[5:]
	var out []byte
	for len(body) > 0 {
		n := min(size, len(body))
		out = append(out, 0x16, rec[1], rec[2], byte(n>>8), byte(n))
		out = append(out, body[:n]...)
		body = body[n:]
	}
	return out
}

func TestInspectTLS(t *testing.T) {
	hello := clientHello(t, &tls.Config{ServerName: "API.Example.com", NextProtos: []string{"h2", "http/1.1"}, InsecureSkipVerify: true})
	noSNI := clientHello(t, &tls.Config{InsecureSkipVerify: true})
	tests := []struct {
		name     string
		in       []byte
		wantSNI  string
		wantALPN []string
	}{
		{"sni and alpn", hello, "api.example.com", []string{"h2", "http/1.1"}},
		{"no sni no alpn", noSNI, "", nil},
		{"hello split over records", splitRecords(hello, 100), "api.example.com", []string{"h2", "http/1.1"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Every strict prefix must ask for more bytes: that is what
			// makes a ClientHello split over TCP segments work.
			for i := 0; i < len(tc.in); i++ {
				if _, more, err := inspect(tc.in[:i]); !more || err != nil {
					t.Fatalf("prefix %d/%d: more=%v err=%v", i, len(tc.in), more, err)
				}
			}
			res, more, err := inspect(tc.in)
			if more || err != nil {
				t.Fatalf("full hello: more=%v err=%v", more, err)
			}
			if res.transport != transportTLS || res.sni != tc.wantSNI || !slices.Equal(res.alpn, tc.wantALPN) {
				t.Fatalf("got %+v, want tls sni=%q alpn=%v", res, tc.wantSNI, tc.wantALPN)
			}
		})
	}
}

func TestInspectTLSTooLarge(t *testing.T) {
	// A handshake record header announcing a ClientHello bigger than we
	// buffer: the connection is refused rather than misclassified.
	huge := []byte{0x16, 3, 1, 0x40, 0x00, 1, 0x01, 0x00, 0x00}
	huge = append(huge, make([]byte, 0x4000-4)...)
	rec2 := append([]byte{0x16, 3, 1, 0x40, 0x00}, make([]byte, 0x4000)...)
	if _, _, err := inspect(append(huge, rec2...)); !errors.Is(err, errClientHelloTooLarge) {
		t.Fatalf("err = %v, want errClientHelloTooLarge", err)
	}
}

func TestInspectHTTP(t *testing.T) {
	tests := []struct {
		name     string
		in       string
		more     bool
		wantALPN []string
	}{
		{"http/1.1", "GET /x?y=1 HTTP/1.1\r\nHost: a\r\n\r\n", false, []string{"http/1.1"}},
		{"http/1.0", "POST / HTTP/1.0\r\n", false, []string{"http/1.0"}},
		{"bare LF", "GET / HTTP/1.1\n", false, []string{"http/1.1"}},
		{"partial request line", "GET /long/pa", true, nil},
		{"partial method", "OPTI", true, nil},
		{"h2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + "\x00\x00", false, []string{"h2c"}},
		{"partial h2 preface", "PRI * HTTP/2.0\r\n", true, nil},
		{"unknown version", "GET / HTTP/3.0\r\n", false, nil},
		{"not a token", "hello\n", false, nil},
		{"ssh banner", "SSH-2.0-OpenSSH_9.6\r\n", false, nil},
		{"leading space", " GET / HTTP/1.1\r\n", false, nil},
		{"binary", "\x00\x01\x02", false, nil},
		{"tls-looking garbage is raw", "\x16\x03\x01\x00\x05\x02\x00\x00\x01\x00", false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, more, err := inspect([]byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if more != tc.more {
				t.Fatalf("more = %v, want %v", more, tc.more)
			}
			if tc.more {
				return
			}
			if res.transport != transportRaw || !slices.Equal(res.alpn, tc.wantALPN) {
				t.Fatalf("got %+v, want raw_buffer alpn=%v", res, tc.wantALPN)
			}
		})
	}
}
