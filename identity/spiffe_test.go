package identity

import (
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    ID
		wantErr string // substring of the error; "" means success
	}{
		{in: "spiffe://cluster.local/ns/default/sa/bookinfo", want: ID{"cluster.local", "default", "bookinfo"}},
		{in: "SPIFFE://td/ns/a/sa/b", want: ID{"td", "a", "b"}},
		{in: "spiffe://my-td_1.example/ns/ns-1/sa/Sa.x_y", want: ID{"my-td_1.example", "ns-1", "Sa.x_y"}},
		{in: "", wantErr: "scheme"},
		{in: "http://td/ns/a/sa/b", wantErr: "scheme"},
		{in: "spiffe:/td/ns/a/sa/b", wantErr: "scheme"},
		{in: "spiffe:///ns/a/sa/b", wantErr: "trust domain is empty"},
		{in: "spiffe://TD/ns/a/sa/b", wantErr: "upper-case"},
		{in: "spiffe://td:8080/ns/a/sa/b", wantErr: "invalid character ':'"},
		{in: "spiffe://user@td/ns/a/sa/b", wantErr: "invalid character '@'"},
		{in: "spiffe://td", wantErr: "path is missing"},
		{in: "spiffe://td/", wantErr: "path is missing"},
		{in: "spiffe://td/ns/a/sa/b/", wantErr: "segment 5: is empty"},
		{in: "spiffe://td/ns//sa/b", wantErr: "segment 2: is empty"},
		{in: "spiffe://td/ns/../sa/b", wantErr: `".." is not allowed`},
		{in: "spiffe://td/ns/./sa/b", wantErr: `"." is not allowed`},
		{in: "spiffe://td/ns/a%2f/sa/b", wantErr: "invalid character '%'"},
		{in: "spiffe://td/ns/a/sa/b?x=1", wantErr: "invalid character '?'"},
		{in: "spiffe://td/ns/a/sa/b#f", wantErr: "invalid character '#'"},
		{in: "spiffe://td/workload", wantErr: "not /ns/NAMESPACE/sa/SERVICE_ACCOUNT"},
		{in: "spiffe://td/sa/b/ns/a", wantErr: "not /ns/NAMESPACE/sa/SERVICE_ACCOUNT"},
		{in: "spiffe://td/ns/a/sa/b/extra", wantErr: "not /ns/NAMESPACE/sa/SERVICE_ACCOUNT"},
		{in: "spiffe://td/" + strings.Repeat("a", 2100), wantErr: "longer than 2048"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %v, %v; want error containing %q", tt.in, got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.in[:min(len(tt.in), 20)]) {
					t.Errorf("error %q does not name the input", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("Parse(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
			}
			if s := got.String(); !strings.EqualFold(s, tt.in) {
				t.Errorf("String() = %q, want %q", s, tt.in)
			}
			if u := got.URL().String(); u != got.String() {
				t.Errorf("URL() = %q, String() = %q", u, got.String())
			}
		})
	}
}

func TestIDZeroAndValidate(t *testing.T) {
	if (ID{}).String() != "" || !(ID{}).IsZero() {
		t.Error("zero ID must render empty and be IsZero")
	}
	if err := (ID{"td", "ns", "sa"}).Validate(); err != nil {
		t.Errorf("Validate valid ID: %v", err)
	}
	if err := (ID{"td", "a/b", "sa"}).Validate(); err == nil {
		t.Error("Validate accepted a namespace with a slash")
	}
}

func TestFromCert(t *testing.T) {
	mustURL := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	tests := []struct {
		name    string
		uris    []*url.URL
		want    ID
		wantErr string
		noID    bool
	}{
		{name: "one", uris: []*url.URL{mustURL("spiffe://td/ns/a/sa/b")}, want: ID{"td", "a", "b"}},
		{name: "none", wantErr: "no URI SAN", noID: true},
		{name: "two", uris: []*url.URL{mustURL("spiffe://td/ns/a/sa/b"), mustURL("spiffe://td/ns/a/sa/c")}, wantErr: "2 URI SANs"},
		{name: "not spiffe", uris: []*url.URL{mustURL("https://example.com/x")}, wantErr: "scheme"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := FromCert(&x509.Certificate{URIs: tt.uris})
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("FromCert = %v, %v; want error %q", got, err, tt.wantErr)
				}
				if errors.Is(err, ErrNoID) != tt.noID {
					t.Errorf("errors.Is(err, ErrNoID) = %v, want %v", !tt.noID, tt.noID)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("FromCert = %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}

func TestMatchers(t *testing.T) {
	a, b := ID{"td", "ns", "a"}, ID{"other", "ns", "a"}
	tests := []struct {
		name string
		m    Matcher
		id   ID
		ok   bool
	}{
		{"any", MatchAny(), b, true},
		{"id match", MatchID(a), a, true},
		{"id mismatch td", MatchID(a), b, false},
		{"id one of", MatchID(b, a), a, true},
		{"td match", MatchTrustDomain("td"), a, true},
		{"td mismatch", MatchTrustDomain("td"), b, false},
	}
	for _, tt := range tests {
		if err := tt.m(tt.id); (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}
