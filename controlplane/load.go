package controlplane

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// Register the message types that may appear as "@type" in files, at top
	// level or inside typed_config, so protojson can resolve them.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// placeholder matches ${NAME}; a bare $NAME is left alone so values such as
// regexes keep their dollars.
var placeholder = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)\}`)

// substitute replaces every ${NAME} in b with vars[NAME].
func substitute(b []byte, vars map[string]string) ([]byte, error) {
	var missing []string
	out := placeholder.ReplaceAllFunc(b, func(m []byte) []byte {
		name := string(m[2 : len(m)-1])
		v, ok := vars[name]
		if !ok {
			missing = append(missing, name)
			return m
		}
		return []byte(v)
	})
	if len(missing) > 0 {
		return nil, fmt.Errorf("undefined placeholder(s) %s", strings.Join(missing, ", "))
	}
	return out, nil
}

// resourceFiles lists the files of dir that hold resources, sorted by name
// so the load order (and error messages) are stable.
func resourceFiles(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("config dir %s: %w", dir, err)
	}
	var files []string
	for _, e := range ents {
		if e.IsDir() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		switch filepath.Ext(e.Name()) {
		case ".yaml", ".yml", ".json":
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	sort.Strings(files)
	return files, nil
}

// parseFile decodes one resource file. Errors name the file and the index
// of the bad resource.
func parseFile(path string, data []byte, vars map[string]string) ([]types.Resource, error) {
	data, err := substitute(data, vars)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	var doc struct {
		Resources []json.RawMessage `json:"resources"`
	}
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("%s: top level must be `resources: [...]`: %w", path, err)
	}
	out := make([]types.Resource, 0, len(doc.Resources))
	for i, raw := range doc.Resources {
		var a anypb.Any
		if err := protojson.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("%s: resources[%d]: %w", path, i, err)
		}
		msg, err := a.UnmarshalNew()
		if err != nil {
			return nil, fmt.Errorf("%s: resources[%d]: %w", path, i, err)
		}
		res, ok := msg.(types.Resource)
		if !ok {
			return nil, fmt.Errorf("%s: resources[%d]: %s is not an xDS resource", path, i, a.GetTypeUrl())
		}
		if cache.GetResponseType(a.GetTypeUrl()) == types.UnknownType {
			return nil, fmt.Errorf("%s: resources[%d]: unsupported @type %s", path, i, a.GetTypeUrl())
		}
		if cache.GetResourceName(res) == "" {
			return nil, fmt.Errorf("%s: resources[%d]: %s has no name", path, i, a.GetTypeUrl())
		}
		out = append(out, res)
	}
	return out, nil
}

// loadDir reads and parses every resource file of dir. It returns the
// resources grouped by type URL.
func loadDir(dir string, vars map[string]string) (map[string][]types.Resource, error) {
	files, err := resourceFiles(dir)
	if err != nil {
		return nil, err
	}
	byType := map[string][]types.Resource{}
	seen := map[string]string{} // typeURL/name -> file
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		res, err := parseFile(f, data, vars)
		if err != nil {
			return nil, err
		}
		for _, r := range res {
			url := typeURL(r)
			key := url + "/" + cache.GetResourceName(r)
			if prev, dup := seen[key]; dup {
				return nil, fmt.Errorf("%s: %s %q already defined in %s", f, shortType(url), cache.GetResourceName(r), prev)
			}
			seen[key] = f
			byType[url] = append(byType[url], r)
		}
	}
	return byType, nil
}

func typeURL(r types.Resource) string {
	return "type.googleapis.com/" + string(r.ProtoReflect().Descriptor().FullName())
}

func shortType(url string) string {
	return url[strings.LastIndex(url, ".")+1:]
}
