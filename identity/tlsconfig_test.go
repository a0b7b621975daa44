package identity

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// handshake runs one TLS handshake over a loopback pipe and returns what
// each side saw.
func handshake(t *testing.T, server, client *tls.Config) (srvState, cliState tls.ConnectionState, srvErr, cliErr error) {
	t.Helper()
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s := tls.Server(c1, server)
		s.SetDeadline(time.Now().Add(5 * time.Second))
		srvErr = s.Handshake()
		srvState = s.ConnectionState()
		if srvErr != nil {
			c1.Close()
		}
	}()
	c := tls.Client(c2, client)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	cliErr = c.Handshake()
	if cliErr == nil {
		// TLS 1.3 clients finish before the server has checked the client
		// certificate; a read surfaces the server's verdict.
		c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		var b [1]byte
		if _, err := c.Read(b[:]); err != nil && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
			cliErr = err
		}
	}
	cliState = c.ConnectionState()
	c2.Close()
	<-done
	return srvState, cliState, srvErr, cliErr
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func TestMutualTLS(t *testing.T) {
	ca, err := NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	otherCA, err := NewEphemeralCA()
	if err != nil {
		t.Fatal(err)
	}
	srvID := ID{"td", "ns", "server"}
	cliID := ID{"td", "ns", "client"}
	foreignID := ID{"other.td", "ns", "client"}
	issue := func(ca *CA, id ID) Source {
		c, err := ca.Issue(id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return Static{Cert: c, Pool: ca.Roots()}
	}
	srv := issue(ca, srvID)
	tests := []struct {
		name       string
		client     Source
		srvMatch   Matcher
		cliMatch   Matcher
		version    uint16
		wantErr    string // substring of either side's error
		wantPeerID ID     // what the server sees
	}{
		{name: "tls13 ok", client: issue(ca, cliID), srvMatch: MatchTrustDomain("td"), cliMatch: MatchID(srvID), version: tls.VersionTLS13, wantPeerID: cliID},
		{name: "tls12 ok", client: issue(ca, cliID), srvMatch: MatchID(cliID), cliMatch: MatchID(srvID), version: tls.VersionTLS12, wantPeerID: cliID},
		{name: "server identity mismatch", client: issue(ca, cliID), cliMatch: MatchID(ID{"td", "ns", "impostor"}), version: tls.VersionTLS13, wantErr: "want spiffe://td/ns/ns/sa/impostor"},
		{name: "client trust domain mismatch", client: issue(ca, foreignID), srvMatch: MatchTrustDomain("td"), version: tls.VersionTLS13, wantErr: `trust domain "other.td"`},
		{name: "client from another CA", client: Static{Cert: mustIssue(t, otherCA, cliID), Pool: ca.Roots()}, version: tls.VersionTLS13, wantErr: "unknown authority"},
		{name: "server from another CA (tls12)", client: Static{Cert: mustIssue(t, ca, cliID), Pool: otherCA.Roots()}, version: tls.VersionTLS12, wantErr: "unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sc := ServerConfig(srv, tt.srvMatch)
			sc.MaxVersion = tt.version
			cc := ClientConfig(tt.client, tt.cliMatch)
			ss, cs, serr, cerr := handshake(t, sc, cc)
			if tt.wantErr != "" {
				if !strings.Contains(errString(serr)+errString(cerr), tt.wantErr) {
					t.Fatalf("server err %v, client err %v; want %q", serr, cerr, tt.wantErr)
				}
				return
			}
			if serr != nil || cerr != nil {
				t.Fatalf("server err %v, client err %v", serr, cerr)
			}
			if ss.Version != tt.version {
				t.Errorf("version %x, want %x", ss.Version, tt.version)
			}
			if got, err := PeerID(ss); err != nil || got != tt.wantPeerID {
				t.Errorf("server PeerID = %v, %v; want %v", got, err, tt.wantPeerID)
			}
			if got, err := PeerID(cs); err != nil || got != srvID {
				t.Errorf("client PeerID = %v, %v; want %v", got, err, srvID)
			}
		})
	}
}

func TestServerRequiresClientCertificate(t *testing.T) {
	ca, _ := NewEphemeralCA()
	srv := Static{Cert: mustIssue(t, ca, ID{"td", "ns", "server"}), Pool: ca.Roots()}
	cc := ClientConfig(Static{Pool: ca.Roots()}, nil)
	cc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &tls.Certificate{}, nil }
	ss, _, serr, cerr := handshake(t, ServerConfig(srv, nil), cc)
	if serr == nil && cerr == nil {
		t.Fatal("handshake without a client certificate succeeded")
	}
	if _, err := PeerID(ss); !errors.Is(err, ErrNoID) {
		t.Errorf("PeerID = %v, want ErrNoID", err)
	}
}

func mustIssue(t *testing.T, ca *CA, id ID) *tls.Certificate {
	t.Helper()
	c, err := ca.Issue(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
