package dns

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/dns/ndspb"
)

func nameTableAny(t *testing.T, table map[string]*ndspb.NameTable_NameInfo) *anypb.Any {
	t.Helper()
	a, err := anypb.New(&ndspb.NameTable{Table: table})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// TestNDSWatcher: accepted NameTables replace the table's NDS names (the
// union when there are several); a set with a bad resource is refused with
// an error naming it, and the table keeps the last good names.
func TestNDSWatcher(t *testing.T) {
	tab := NewTable(TableConfig{Namespace: "ns"})
	w := &NDSWatcher{Table: tab}
	db := map[string]*ndspb.NameTable_NameInfo{
		"db.ns.svc.cluster.local": {Ips: []string{"10.4.0.1"}, Registry: "Kubernetes", Shortname: "db", Namespace: "ns"},
	}
	ext := map[string]*ndspb.NameTable_NameInfo{"ext.example.com": {Ips: []string{"10.4.0.2"}, Registry: "External"}}
	lookup := func(name string) bool { _, v := tab.cur.Load().lookup(name); return v == found }

	steps := []struct {
		name      string
		resources map[string]*anypb.Any
		wantErr   string
		known     []string
		unknown   []string
	}{
		{name: "one table", resources: map[string]*anypb.Any{"#0": nameTableAny(t, db)},
			known: []string{"db.", "db.ns.svc."}, unknown: []string{"ext.example.com."}},
		{name: "two tables merged", resources: map[string]*anypb.Any{"#0": nameTableAny(t, db), "#1": nameTableAny(t, ext)},
			known: []string{"db.", "ext.example.com."}},
		{name: "wrong type", resources: map[string]*anypb.Any{"#0": nameTableAny(t, db), "x": {TypeUrl: "type.googleapis.com/other"}},
			wantErr: `NameTable "x": type "type.googleapis.com/other"`, known: []string{"db.", "ext.example.com."}},
		{name: "undecodable", resources: map[string]*anypb.Any{"#0": {TypeUrl: TypeNameTable, Value: []byte{0xff, 0xff}}},
			wantErr: `NameTable "#0": `, known: []string{"db.", "ext.example.com."}},
		{name: "replaced", resources: map[string]*anypb.Any{"#0": nameTableAny(t, ext)},
			known: []string{"ext.example.com."}, unknown: []string{"db."}},
	}
	for _, s := range steps {
		err := w.Apply(s.resources)
		if s.wantErr == "" && err != nil || s.wantErr != "" && (err == nil || !strings.Contains(err.Error(), s.wantErr)) {
			t.Errorf("%s: Apply = %v, want error %q", s.name, err, s.wantErr)
		}
		for _, n := range s.known {
			if !lookup(n) {
				t.Errorf("%s: %s not in the table", s.name, n)
			}
		}
		for _, n := range s.unknown {
			if lookup(n) {
				t.Errorf("%s: %s still in the table", s.name, n)
			}
		}
	}
}
