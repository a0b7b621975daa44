package main

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// checkDemoPolicyOutput asserts what the traffic-policy steps of a demo run
// showed the user: the numbers in their summary lines, within bounds a
// correct proxy stays in (the demo's own checks are tighter or equal).
func checkDemoPolicyOutput(t *testing.T, out string) {
	t.Helper()
	tests := []struct {
		name string
		re   string
		// check gets the submatches parsed as floats.
		check func(v []float64) bool
	}{
		{"fault: about 30% 503s",
			`\[6/10\][\s\S]*?client saw 503 on ([\d.]+)% of requests \(expected 30\.0%\)`,
			func(v []float64) bool { return v[0] >= 20 && v[0] <= 40 }},
		{"retries: almost no 503s, about 30% retried",
			`\[7/10\][\s\S]*?client saw 503 on ([\d.]+)% of requests \(expected 0\.8% [^)]*\); ([\d.]+)% needed a retry`,
			func(v []float64) bool { return v[0] <= 3 && v[1] >= 20 && v[1] <= 40 }},
		{"retries: echo saw attempts 2 to 4",
			`200 after 2 +(\d+)[\s\S]*?200 after 4 +(\d+)`,
			func(v []float64) bool { return v[0] > 0 }},
		{"timeout: every request 504 UT",
			`with the 100ms timeout: 504 UT on (\d+) of (\d+) requests`,
			func(v []float64) bool { return v[0] == v[1] && v[1] > 0 }},
		{"no timeout: 200 after the 200ms delay",
			`without the timeout: 200 on (\d+) of (\d+) requests, latency p50 ([\d.]+)ms`,
			func(v []float64) bool { return v[0] == v[1] && v[2] >= 200 && v[2] < 2000 }},
		{"mirror: about half mirrored, all to the -shadow host",
			`echo-mirror received (\d+) of (\d+) requests \([\d.]+%, expected 50\.0%\), (\d+) with host echo\.demo-shadow`,
			func(v []float64) bool { s := v[0] / v[1]; return s >= 0.4 && s <= 0.6 && v[2] == v[0] }},
	}
	for _, tt := range tests {
		m := regexp.MustCompile(tt.re).FindStringSubmatch(out)
		if m == nil {
			t.Errorf("%s: output lacks /%s/", tt.name, tt.re)
			continue
		}
		v := make([]float64, len(m)-1)
		for i, s := range m[1:] {
			v[i], _ = strconv.ParseFloat(s, 64)
		}
		if !tt.check(v) {
			t.Errorf("%s: out of bounds: %q", tt.name, m[0])
		}
	}
}

// checkDemoMTLSOutput asserts the mTLS step: each proxy shows its SPIFFE
// identity, STRICT refuses plaintext, the allowed caller gets 200 and the
// other caller 403 from RBAC on every request, and the server proxy lists
// both peer identities with those codes.
func checkDemoMTLSOutput(t *testing.T, out string) {
	t.Helper()
	i := strings.Index(out, "[10/10] mTLS")
	if i < 0 {
		t.Errorf("output lacks the mTLS step [10/10]")
		return
	}
	step := out[i:]
	for _, re := range []string{
		`server proxy +spiffe://cluster\.local/ns/demo/sa/echo \(expires`,
		`client proxy +spiffe://cluster\.local/ns/demo/sa/sleep \(expires`,
		`client proxy +spiffe://cluster\.local/ns/demo/sa/intruder \(expires`,
		`plaintext to the STRICT inbound: refused`,
		`caller sa/sleep +200 on 100 of 100 requests \(echo v1 answered\)\n`,
		`caller sa/intruder +403 on 100 of 100 requests, body "RBAC: access denied"\n`,
		`the server proxy saw these peer identities:\n +spiffe://cluster\.local/ns/demo/sa/intruder +403 x100\n +spiffe://cluster\.local/ns/demo/sa/sleep +200 x100\n`,
	} {
		if !regexp.MustCompile(re).MatchString(step) {
			t.Errorf("mTLS step output lacks /%s/", re)
		}
	}
}
