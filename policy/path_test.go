package policy

import (
	"strings"
	"testing"

	"github.com/meshlet/meshlet/state"
)

func TestNormalizePath(t *testing.T) {
	istio := state.PathNormalization{NormalizePath: true, MergeSlashes: true}
	fwd := state.PathNormalization{NormalizePath: true, MergeSlashes: true, EscapedSlashes: state.UnescapeAndForward}
	reject := state.PathNormalization{NormalizePath: true, MergeSlashes: true, EscapedSlashes: state.RejectEscapedSlashes}
	redirect := state.PathNormalization{NormalizePath: true, MergeSlashes: true, EscapedSlashes: state.UnescapeAndRedirect}
	for _, tc := range []struct {
		name string
		cfg  state.PathNormalization
		in   string
		want string
		v    PathVerdict
	}{
		{"off leaves everything", state.PathNormalization{}, "//x/../%61dmin", "//x/../%61dmin", PathContinue},
		{"clean path unchanged", istio, "/a/b?x=1", "/a/b?x=1", PathContinue},
		{"double slash", istio, "//admin", "/admin", PathContinue},
		{"dot dot", istio, "/x/../admin", "/admin", PathContinue},
		{"dot", istio, "/./admin/.", "/admin/", PathContinue},
		{"above root", istio, "/../../admin", "/admin", PathContinue},
		{"encoded unreserved", istio, "/%61dmin", "/admin", PathContinue},
		{"encoded dots", istio, "/x/%2e%2E/admin", "/admin", PathContinue},
		{"mixed dots", istio, "/x/.%2e/admin", "/admin", PathContinue},
		{"reserved escape kept, hex upper", istio, "/a%3fb%2f", "/a%3Fb%2F", PathContinue},
		{"backslash", istio, "/x\\..\\admin", "/admin", PathContinue},
		{"query untouched", istio, "/a//b/../c?p=/../&q=%61", "/a/c?p=/../&q=%61", PathContinue},
		{"space escaped", istio, "/a b", "/a%20b", PathContinue},
		{"bad escape", istio, "/a%zz", "/a%25zz", PathContinue},
		{"merge only", state.PathNormalization{MergeSlashes: true}, "/a//../b", "/a/../b", PathContinue},
		{"normalize only", state.PathNormalization{NormalizePath: true}, "//a", "//a", PathContinue},
		{"merge after normalize", istio, "/a/.//b", "/a/b", PathContinue},
		{"escaped slash kept", istio, "/admin%2F", "/admin%2F", PathContinue},
		{"escaped slash forwarded", fwd, "/admin%2F", "/admin/", PathContinue},
		{"escaped slash dot dot", fwd, "/x%2F..%2Fadmin", "/admin", PathContinue},
		{"escaped backslash forwarded", fwd, "/x%5c..%5cadmin", "/admin", PathContinue},
		{"escaped slash rejected", reject, "/admin%2f", "/admin%2f", PathReject},
		{"no escaped slash not rejected", reject, "/admin", "/admin", PathContinue},
		{"escaped slash redirected", redirect, "/a%2F%2Fb", "/a/b", PathRedirect},
		{"escaped slash in query ignored", reject, "/a?b=%2F", "/a?b=%2F", PathContinue},
		{"fragment rejected", istio, "/a#b", "/a#b", PathReject},
		{"not origin form", istio, "a/b", "a/b", PathReject},
		{"asterisk", istio, "*", "*", PathContinue},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, v := NormalizePath(tc.cfg, tc.in)
			if got != tc.want || v != tc.v {
				t.Fatalf("NormalizePath(%q) = %q, %v; want %q, %v", tc.in, got, v, tc.want, tc.v)
			}
		})
	}
}

// TestNormalizeBypassList is the list of spellings of /admin that must all
// reach routing and policy as /admin (or /admin/) under Istio's settings
// with escaped slashes unescaped.
func TestNormalizeBypassList(t *testing.T) {
	cfg := state.PathNormalization{NormalizePath: true, MergeSlashes: true, EscapedSlashes: state.UnescapeAndForward}
	for _, in := range []string{"//admin", "/x/../admin", "/%61dmin", "/admin%2F", "/./admin", "///admin//",
		"/%2e/admin", "/x/%2E%2E/admin", "/%2Fadmin", "/a/b/../../admin", "\\admin"} {
		got, v := NormalizePath(cfg, in)
		if v != PathContinue || (got != "/admin" && got != "/admin/") {
			t.Errorf("NormalizePath(%q) = %q, %v; want /admin", in, got, v)
		}
	}
}

// FuzzNormalizePath checks the normalizer's invariants: it never panics,
// a continued path starts with '/', contains no dot segments, no merged
// slashes and no escaped slashes when they are unescaped, and normalizing
// again changes nothing (what the policy judged is what the upstream gets,
// even through a second meshlet).
func FuzzNormalizePath(f *testing.F) {
	for _, s := range []string{"/", "//admin", "/x/../admin", "/%61dmin", "/admin%2F", "/a?b#c", "/%", "/%2",
		"/..", "/.%2e/", "\\a", "/a b", "/%25%32%66", "/%2e%2e%2f", "*"} {
		f.Add(s, uint8(0))
	}
	f.Fuzz(func(t *testing.T, in string, mode uint8) {
		cfg := state.PathNormalization{
			NormalizePath:  mode&1 != 0,
			MergeSlashes:   mode&2 != 0,
			EscapedSlashes: state.EscapedSlashesAction(mode >> 2 % 4),
		}
		out, v := NormalizePath(cfg, in)
		if v != PathContinue || !cfg.Enabled() || out == "*" {
			return
		}
		p, _ := splitQuery(out)
		if cfg.NormalizePath {
			if !strings.HasPrefix(p, "/") {
				t.Fatalf("%q -> %q: not absolute", in, out)
			}
			for _, seg := range strings.Split(p, "/") {
				if seg == "." || seg == ".." {
					t.Fatalf("%q -> %q: dot segment left", in, out)
				}
			}
			if strings.ContainsRune(p, '\\') {
				t.Fatalf("%q -> %q: backslash left", in, out)
			}
		}
		if cfg.MergeSlashes && strings.Contains(p, "//") {
			t.Fatalf("%q -> %q: slashes not merged", in, out)
		}
		if cfg.EscapedSlashes == state.UnescapeAndForward {
			if _, found := unescapeSlashes(p); found && cfg.NormalizePath {
				t.Fatalf("%q -> %q: escaped slash left", in, out)
			}
		}
		if cfg.NormalizePath && cfg.MergeSlashes {
			again, v2 := NormalizePath(cfg, out)
			if again != out || v2 != PathContinue {
				t.Fatalf("not idempotent: %q -> %q -> %q (%v)", in, out, again, v2)
			}
		}
	})
}

// TestNormalizePathNoAlloc: a path that needs no change costs no
// allocation, so Istio's default settings are free on the hot path.
func TestNormalizePathNoAlloc(t *testing.T) {
	cfg := state.PathNormalization{NormalizePath: true, MergeSlashes: true, EscapedSlashes: state.UnescapeAndForward}
	for _, p := range []string{"/api/v1/items.json?x=1", "/a/.well-known/b", "/"} {
		if n := testing.AllocsPerRun(100, func() { NormalizePath(cfg, p) }); n != 0 {
			t.Errorf("%s: %v allocations", p, n)
		}
	}
}
