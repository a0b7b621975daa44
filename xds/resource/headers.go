//lint:file-ignore SA1019 deprecated Envoy fields are still sent by control planes and must be honoured, not ignored.

package resource

import (
	"errors"
	"fmt"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"golang.org/x/net/http/httpguts"

	"github.com/meshlet/meshlet/state"
)

// headerLists are the four header mutation fields shared by route
// configurations, virtual hosts, routes and weighted clusters.
type headerLists interface {
	GetRequestHeadersToAdd() []*corev3.HeaderValueOption
	GetRequestHeadersToRemove() []string
	GetResponseHeadersToAdd() []*corev3.HeaderValueOption
	GetResponseHeadersToRemove() []string
}

func decodeHeaderMutation(h headerLists) (state.HeaderMutation, error) {
	var out state.HeaderMutation
	var err error
	if out.RequestAdd, err = headerAdds("request_headers_to_add", h.GetRequestHeadersToAdd()); err != nil {
		return out, err
	}
	if out.RequestRemove, err = headerRemoves("request_headers_to_remove", h.GetRequestHeadersToRemove()); err != nil {
		return out, err
	}
	if out.ResponseAdd, err = headerAdds("response_headers_to_add", h.GetResponseHeadersToAdd()); err != nil {
		return out, err
	}
	if out.ResponseRemove, err = headerRemoves("response_headers_to_remove", h.GetResponseHeadersToRemove()); err != nil {
		return out, err
	}
	return out, nil
}

// modifiableHeader mirrors Envoy's rule that pseudo-headers and host cannot
// be added or removed through header mutations (host has its own rewrite
// options).
func modifiableHeader(name string) error {
	if name == "" {
		return errors.New("header name is required")
	}
	if strings.HasPrefix(name, ":") || name == "host" {
		return fmt.Errorf("header %q cannot be modified", name)
	}
	if !httpguts.ValidHeaderFieldName(name) {
		return fmt.Errorf("invalid header name %q", name)
	}
	return nil
}

func headerAdds(field string, opts []*corev3.HeaderValueOption) ([]state.HeaderValueOption, error) {
	if len(opts) == 0 {
		return nil, nil
	}
	out := make([]state.HeaderValueOption, 0, len(opts))
	for i, o := range opts {
		v, err := headerAdd(o)
		if err != nil {
			return nil, atIndex(field, i, err)
		}
		out = append(out, v)
	}
	return out, nil
}

func headerAdd(o *corev3.HeaderValueOption) (state.HeaderValueOption, error) {
	h := o.GetHeader()
	if h == nil {
		return state.HeaderValueOption{}, errAt("header", "is required")
	}
	key := strings.ToLower(h.GetKey())
	if err := modifiableHeader(key); err != nil {
		return state.HeaderValueOption{}, errAt("header.key", "%v", err)
	}
	value := h.GetValue()
	if len(h.GetRawValue()) > 0 {
		if value != "" {
			return state.HeaderValueOption{}, errAt("header.raw_value", "only one of value and raw_value may be set")
		}
		value = string(h.GetRawValue())
	}
	if !httpguts.ValidHeaderFieldValue(value) {
		return state.HeaderValueOption{}, errAt("header.value", "invalid header value for %q", key)
	}
	out := state.HeaderValueOption{Key: key, Value: value, KeepEmptyValue: o.GetKeepEmptyValue()}
	switch o.GetAppendAction() {
	case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
		out.Action = state.AppendIfExistsOrAdd
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		out.Action = state.AddIfAbsent
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
		out.Action = state.OverwriteIfExistsOrAdd
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		out.Action = state.OverwriteIfExists
	default:
		return out, errAt("append_action", "unknown value %d", o.GetAppendAction())
	}
	if ap := o.GetAppend(); ap != nil {
		if o.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
			return out, errAt("append", "cannot be set together with append_action")
		}
		if !ap.GetValue() {
			out.Action = state.OverwriteIfExistsOrAdd
		}
	}
	return out, nil
}

func headerRemoves(field string, names []string) ([]string, error) {
	if len(names) == 0 {
		return nil, nil
	}
	out := make([]string, 0, len(names))
	for i, n := range names {
		n = strings.ToLower(n)
		if err := modifiableHeader(n); err != nil {
			return nil, errAt(fmt.Sprintf("%s[%d]", field, i), "%v", err)
		}
		out = append(out, n)
	}
	return out, nil
}
