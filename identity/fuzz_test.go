package identity

import "testing"

// FuzzParse checks that whatever Parse accepts renders back to the same ID
// and validates, so an ID from a certificate and one from configuration
// compare equal exactly when their strings do.
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"spiffe://cluster.local/ns/default/sa/app", "spiffe://td/ns/a/sa/b/", "spiffe://TD/ns/a/sa/b",
		"spiffe://td/ns/%2e%2e/sa/b", "spiffe://td:1/ns/a/sa/b", "", "spiffe://",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(id.String())
		if err != nil || again != id {
			t.Fatalf("Parse(%q) = %+v, but Parse(String()) = %+v, %v", s, id, again, err)
		}
		if err := id.Validate(); err != nil {
			t.Fatalf("accepted %q fails Validate: %v", s, err)
		}
	})
}
