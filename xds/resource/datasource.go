package resource

import (
	"errors"
	"fmt"
	"os"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// dataSource returns the bytes a DataSource names. Files are read once at
// decode time: rotation of file-based certificates comes with SDS, which
// replaces this path.
func dataSource(d *corev3.DataSource) ([]byte, error) {
	switch s := d.GetSpecifier().(type) {
	case *corev3.DataSource_InlineBytes:
		return s.InlineBytes, nil
	case *corev3.DataSource_InlineString:
		return []byte(s.InlineString), nil
	case *corev3.DataSource_Filename:
		b, err := os.ReadFile(s.Filename)
		if err != nil {
			return nil, errAt("filename", "%v", err)
		}
		return b, nil
	case *corev3.DataSource_EnvironmentVariable:
		v, ok := os.LookupEnv(s.EnvironmentVariable)
		if !ok {
			return nil, errAt("environment_variable", "%q is not set", s.EnvironmentVariable)
		}
		return []byte(v), nil
	case nil:
		return nil, errors.New("a data source (inline_bytes, inline_string or filename) is required")
	default:
		return nil, fmt.Errorf("data source %T is not supported", s)
	}
}
