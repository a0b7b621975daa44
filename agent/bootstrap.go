package agent

import (
	"encoding/json"
	"fmt"
	"maps"
	"strconv"
	"time"

	"github.com/meshlet/meshlet/xds"
)

// ServerListenerTemplate is the name Istio gives the inbound Listener of a
// proxyless gRPC server (gRFC A36): grpc-go replaces %s with the address
// it listens on, e.g. "xds.istio.io/grpc/lds/inbound/0.0.0.0:8080".
const ServerListenerTemplate = "xds.istio.io/grpc/lds/inbound/%s"

// CertProviderName is the certificate provider instance the bootstrap
// declares; xDS TLS contexts name it (Istio's generator uses "default").
const CertProviderName = "default"

// CertFiles are the PEM files the file_watcher certificate provider reads
// (gRFC A29): the chain (leaf first), its key, and the trust bundle.
type CertFiles struct {
	Cert, Key, Root string
}

// BootstrapOptions are the variable parts of a gRFC A27 bootstrap.
type BootstrapOptions struct {
	// ServerURI is where the application's xDS client connects: the
	// agent's "unix:///abs/path" or "127.0.0.1:PORT".
	ServerURI string
	Node      xds.Node
	// Certs, when set, declare the file_watcher provider CertProviderName
	// over these files.
	Certs *CertFiles
	// Refresh is how often grpc re-reads Certs; default 10 minutes. It
	// must be shorter than the time between a renewal and the old
	// certificate's expiry.
	Refresh time.Duration
	// ServerListenerTemplate defaults to ServerListenerTemplate.
	ServerListenerTemplate string
	// ClientListenerTemplate, when set, is
	// client_default_listener_resource_name_template (gRFC A47); grpc's
	// default is "%s", the target's host name.
	ClientListenerTemplate string
}

// The JSON shapes of gRFC A27/A29/A36; only the fields the agent writes.
type bootstrapJSON struct {
	XDSServers             []xdsServerJSON         `json:"xds_servers"`
	Node                   nodeJSON                `json:"node"`
	CertificateProviders   map[string]providerJSON `json:"certificate_providers,omitempty"`
	ServerListenerTemplate string                  `json:"server_listener_resource_name_template,omitempty"`
	ClientListenerTemplate string                  `json:"client_default_listener_resource_name_template,omitempty"`
}

type xdsServerJSON struct {
	ServerURI      string        `json:"server_uri"`
	ChannelCreds   []channelCred `json:"channel_creds"`
	ServerFeatures []string      `json:"server_features"`
}

type channelCred struct {
	Type string `json:"type"`
}

type nodeJSON struct {
	ID       string            `json:"id"`
	Cluster  string            `json:"cluster,omitempty"`
	Metadata map[string]string `json:"metadata,omitempty"`
	Locality *localityJSON     `json:"locality,omitempty"`
}

type localityJSON struct {
	Region  string `json:"region,omitempty"`
	Zone    string `json:"zone,omitempty"`
	SubZone string `json:"sub_zone,omitempty"`
}

type providerJSON struct {
	PluginName string          `json:"plugin_name"`
	Config     fileWatcherJSON `json:"config"`
}

type fileWatcherJSON struct {
	CertificateFile   string `json:"certificate_file"`
	PrivateKeyFile    string `json:"private_key_file"`
	CACertificateFile string `json:"ca_certificate_file"`
	// RefreshInterval is a google.protobuf.Duration in its JSON form.
	RefreshInterval string `json:"refresh_interval"`
}

// defaultRefresh is grpc's own file_watcher default.
const defaultRefresh = 10 * time.Minute

// GeneratorMetadata is the node metadata key istiod reads to pick its
// proxyless gRPC generator; the agent sets it to "grpc" unless the
// environment (ISTIO_META_GENERATOR) chose otherwise.
const GeneratorMetadata = "GENERATOR"

// Bootstrap renders the bootstrap JSON.
func Bootstrap(o BootstrapOptions) ([]byte, error) {
	if o.ServerURI == "" {
		return nil, fmt.Errorf("bootstrap: no xDS server URI")
	}
	if o.Node.ID == "" {
		return nil, fmt.Errorf("bootstrap: no node id")
	}
	b := bootstrapJSON{
		XDSServers: []xdsServerJSON{{
			ServerURI: o.ServerURI,
			// The hop to the agent is local; the agent secures the one to
			// the control plane.
			ChannelCreds:   []channelCred{{Type: "insecure"}},
			ServerFeatures: []string{"xds_v3"},
		}},
		Node: nodeJSON{
			ID:       o.Node.ID,
			Cluster:  o.Node.Cluster,
			Metadata: maps.Clone(o.Node.Metadata),
		},
		ServerListenerTemplate: o.ServerListenerTemplate,
		ClientListenerTemplate: o.ClientListenerTemplate,
	}
	if b.ServerListenerTemplate == "" {
		b.ServerListenerTemplate = ServerListenerTemplate
	}
	if b.Node.Metadata == nil {
		b.Node.Metadata = map[string]string{}
	}
	if b.Node.Metadata[GeneratorMetadata] == "" {
		b.Node.Metadata[GeneratorMetadata] = "grpc"
	}
	if l := o.Node.Locality; l.Region != "" || l.Zone != "" || l.SubZone != "" {
		b.Node.Locality = &localityJSON{Region: l.Region, Zone: l.Zone, SubZone: l.SubZone}
	}
	if o.Certs != nil {
		if o.Certs.Cert == "" || o.Certs.Key == "" || o.Certs.Root == "" {
			return nil, fmt.Errorf("bootstrap: certificate provider needs cert, key and root files")
		}
		refresh := o.Refresh
		if refresh <= 0 {
			refresh = defaultRefresh
		}
		b.CertificateProviders = map[string]providerJSON{CertProviderName: {
			PluginName: "file_watcher",
			Config: fileWatcherJSON{
				CertificateFile:   o.Certs.Cert,
				PrivateKeyFile:    o.Certs.Key,
				CACertificateFile: o.Certs.Root,
				RefreshInterval:   durationJSON(refresh),
			},
		}}
	}
	out, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	return append(out, '\n'), nil
}

// durationJSON is the protobuf JSON form of a Duration: seconds with up to
// nine fractional digits and an "s" suffix.
func durationJSON(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
}

// WriteBootstrap renders the bootstrap and writes it to path atomically,
// readable by the application (0644, as pilot-agent writes it).
func WriteBootstrap(path string, o BootstrapOptions) error {
	data, err := Bootstrap(o)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data, 0o644)
}
