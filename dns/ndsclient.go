package dns

import (
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshlet/meshlet/dns/ndspb"
)

// NDSWatcher feeds a Table from Istio's NameTable (NDS). The binary
// registers it for TypeNameTable on its xDS client, so NDS rides the one
// ADS connection that carries the proxy's other resources, with that
// connection's TLS and token settings; dns itself opens no stream. Its
// Apply method has the shape of xds.ExtraWatcher without dns importing xds.
//
// istiod sends a NameTable only to a node whose metadata sets DNS_CAPTURE
// to "true" (pilot-agent's ISTIO_META_DNS_CAPTURE); whoever builds the
// node must set it.
type NDSWatcher struct {
	Table *Table
	// Log defaults to slog.Default().
	Log *slog.Logger
}

// Apply replaces the table's NDS hosts with the union of resources
// (istiod sends one NameTable). A resource that is not a NameTable, or
// does not decode, rejects them all: the table keeps the last good names
// and the error is what the control plane is told.
func (w *NDSWatcher) Apply(resources map[string]*anypb.Any) error {
	nt, err := mergeNameTables(resources)
	if err != nil {
		return err
	}
	w.Table.SetNDS(HostsFromNameTable(nt))
	log := w.Log
	if log == nil {
		log = slog.Default()
	}
	log.Debug("NameTable applied", "component", "nds", "resources", len(resources), "hosts", len(nt.GetTable()))
	return nil
}

// mergeNameTables decodes every resource into one table. Resources are
// merged in name order so that a host named by two of them resolves the
// same way on every push.
func mergeNameTables(resources map[string]*anypb.Any) (*ndspb.NameTable, error) {
	out := &ndspb.NameTable{Table: map[string]*ndspb.NameTable_NameInfo{}}
	for _, name := range slices.Sorted(maps.Keys(resources)) {
		r := resources[name]
		if r.GetTypeUrl() != TypeNameTable {
			return nil, fmt.Errorf("NameTable %q: type %q, want %q", name, r.GetTypeUrl(), TypeNameTable)
		}
		var nt ndspb.NameTable
		if err := r.UnmarshalTo(&nt); err != nil {
			return nil, fmt.Errorf("NameTable %q: %w", name, err)
		}
		maps.Copy(out.Table, nt.GetTable())
	}
	return out, nil
}
