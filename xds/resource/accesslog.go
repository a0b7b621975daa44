package resource

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshlet/meshlet/state"
)

const (
	typeFileAccessLog   = "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog"
	typeStdoutAccessLog = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
	typeStderrAccessLog = "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
	// maxFilterDepth bounds and_filter/or_filter nesting so a hostile
	// resource cannot make evaluation recurse without limit.
	maxFilterDepth = 8
)

// accessLogOperators are the command operators telemetry can render. A
// format using any other operator is rejected, as Envoy rejects it, rather
// than logging a literal the operator did not ask for. The bool says
// whether the operator takes a (ARG).
var accessLogOperators = map[string]bool{
	"START_TIME": false, "PROTOCOL": false, "RESPONSE_CODE": false, "RESPONSE_FLAGS": false,
	"BYTES_RECEIVED": false, "BYTES_SENT": false, "DURATION": false,
	"UPSTREAM_HOST": false, "UPSTREAM_CLUSTER": false, "UPSTREAM_REQUEST_ATTEMPT_COUNT": false,
	"DOWNSTREAM_REMOTE_ADDRESS": false, "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": false,
	"DOWNSTREAM_LOCAL_ADDRESS": false, "DOWNSTREAM_PEER_URI_SAN": false, "ROUTE_NAME": false,
	"HOSTNAME": false,
	"REQ":      true, "REQUEST_HEADER": true, "RESP": true, "RESPONSE_HEADER": true,
}

// decodeAccessLogs decodes the access_log field of an HTTP connection
// manager or tcp_proxy.
func decodeAccessLogs(logs []*accesslogv3.AccessLog) ([]*state.AccessLog, error) {
	var out []*state.AccessLog
	for i, l := range logs {
		al, err := decodeAccessLog(l)
		if err != nil {
			return nil, atIndex("access_log", i, err)
		}
		out = append(out, al)
	}
	return out, nil
}

func decodeAccessLog(l *accesslogv3.AccessLog) (*state.AccessLog, error) {
	out := &state.AccessLog{Name: l.GetName()}
	tc := l.GetTypedConfig()
	if tc == nil {
		return nil, errAt("typed_config", "is required (access logger %q)", l.GetName())
	}
	var format *corev3.SubstitutionFormatString
	switch tc.GetTypeUrl() {
	case typeFileAccessLog:
		var f filev3.FileAccessLog
		if err := tc.UnmarshalTo(&f); err != nil {
			return nil, at("typed_config", err)
		}
		if f.GetPath() == "" {
			return nil, errAt("typed_config.path", "is required")
		}
		out.Sink, out.Path = state.AccessLogFile, f.GetPath()
		switch lf := f.GetAccessLogFormat().(type) {
		case nil:
		case *filev3.FileAccessLog_LogFormat:
			format = lf.LogFormat
		case *filev3.FileAccessLog_Format:
			//lint:ignore SA1019 deprecated but still sent by control planes; Envoy accepts it
			out.Text = lf.Format
		case *filev3.FileAccessLog_JsonFormat:
			//lint:ignore SA1019 deprecated but still sent by control planes; Envoy accepts it
			format = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: lf.JsonFormat}}
		case *filev3.FileAccessLog_TypedJsonFormat:
			//lint:ignore SA1019 deprecated but still sent by control planes; Envoy accepts it
			format = &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: lf.TypedJsonFormat}}
		}
	case typeStdoutAccessLog:
		var s streamv3.StdoutAccessLog
		if err := tc.UnmarshalTo(&s); err != nil {
			return nil, at("typed_config", err)
		}
		out.Sink, format = state.AccessLogStdout, s.GetLogFormat()
	case typeStderrAccessLog:
		var s streamv3.StderrAccessLog
		if err := tc.UnmarshalTo(&s); err != nil {
			return nil, at("typed_config", err)
		}
		out.Sink, format = state.AccessLogStderr, s.GetLogFormat()
	default:
		return nil, errAt("typed_config", "access logger %q (%s) is not supported", l.GetName(), tc.GetTypeUrl())
	}
	if format != nil {
		if err := decodeLogFormat(out, format); err != nil {
			return nil, at("typed_config.log_format", err)
		}
	}
	if out.Text != "" {
		if err := checkFormat(out.Text); err != nil {
			return nil, at("typed_config.log_format", err)
		}
	}
	if l.GetFilter() != nil {
		f, err := decodeAccessLogFilter(l.GetFilter(), 0)
		if err != nil {
			return nil, at("filter", err)
		}
		out.Filter = f
	}
	return out, nil
}

func decodeLogFormat(out *state.AccessLog, f *corev3.SubstitutionFormatString) error {
	if len(f.GetFormatters()) > 0 {
		return errAt("formatters", "custom formatters are not supported")
	}
	out.OmitEmptyValues = f.GetOmitEmptyValues()
	switch v := f.GetFormat().(type) {
	case *corev3.SubstitutionFormatString_TextFormat:
		//lint:ignore SA1019 deprecated but still sent by control planes; Envoy accepts it
		out.Text = v.TextFormat
	case *corev3.SubstitutionFormatString_TextFormatSource:
		b, err := dataSource(v.TextFormatSource)
		if err != nil {
			return at("text_format_source", err)
		}
		out.Text = string(b)
	case *corev3.SubstitutionFormatString_JsonFormat:
		fields, err := jsonFormat(v.JsonFormat, 0)
		if err != nil {
			return at("json_format", err)
		}
		out.JSON = fields
	case nil:
		return errAt("format", "one of text_format, text_format_source or json_format is required")
	default:
		return errAt("format", "%T is not supported", v)
	}
	return nil
}

// jsonFormat flattens a format dictionary into fields sorted by key, so a
// line's key order does not depend on map iteration.
func jsonFormat(s *structpb.Struct, depth int) ([]state.AccessLogJSONField, error) {
	if depth > maxFilterDepth {
		return nil, fmt.Errorf("nested more than %d levels", maxFilterDepth)
	}
	keys := make([]string, 0, len(s.GetFields()))
	for k := range s.GetFields() {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	out := make([]state.AccessLogJSONField, 0, len(keys))
	for _, k := range keys {
		f := state.AccessLogJSONField{Key: k}
		switch v := s.GetFields()[k].GetKind().(type) {
		case *structpb.Value_StringValue:
			if err := checkFormat(v.StringValue); err != nil {
				return nil, at(k, err)
			}
			f.Format, f.IsFormat = v.StringValue, true
		case *structpb.Value_StructValue:
			nested, err := jsonFormat(v.StructValue, depth+1)
			if err != nil {
				return nil, at(k, err)
			}
			f.Nested = nested
		case *structpb.Value_NumberValue, *structpb.Value_BoolValue, *structpb.Value_NullValue:
			b, err := json.Marshal(s.GetFields()[k].AsInterface())
			if err != nil {
				return nil, at(k, err)
			}
			f.Literal = string(b)
		default:
			return nil, errAt(k, "%T values are not supported in a format dictionary", v)
		}
		out = append(out, f)
	}
	return out, nil
}

// checkFormat validates the command operators of a format string. The
// syntax is %OP%, %OP(ARG)% or %OP(ARG):MAXLEN%, and %% is not an escape
// in Envoy: a lone % that does not start an operator is literal text.
func checkFormat(s string) error {
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			continue
		}
		end := strings.IndexByte(s[i+1:], '%')
		if end < 0 {
			return nil
		}
		tok := s[i+1 : i+1+end]
		name, arg, hasArg := tok, "", false
		if p := strings.IndexByte(tok, '('); p >= 0 {
			q := strings.LastIndexByte(tok, ')')
			if q < p {
				return fmt.Errorf("operator %%%s%%: missing )", tok)
			}
			name, arg, hasArg = tok[:p], tok[p+1:q], true
			if rest := tok[q+1:]; rest != "" {
				if !strings.HasPrefix(rest, ":") || !isDigits(rest[1:]) {
					return fmt.Errorf("operator %%%s%%: bad length suffix %q", tok, rest)
				}
			}
		}
		if !isOperatorName(name) {
			// Not an operator: a literal % (as in "100%") and Envoy
			// treats it the same way.
			continue
		}
		takesArg, ok := accessLogOperators[name]
		if !ok {
			return fmt.Errorf("command operator %%%s%% is not supported", name)
		}
		switch {
		case takesArg && (!hasArg || arg == ""):
			return fmt.Errorf("command operator %%%s%% needs a header name: %%%s(X)%%", name, name)
		case !takesArg && hasArg:
			return fmt.Errorf("command operator %%%s%% takes no argument", name)
		}
		i += end + 1
	}
	return nil
}

func isOperatorName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'A' || c > 'Z') && c != '_' && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

func decodeAccessLogFilter(f *accesslogv3.AccessLogFilter, depth int) (*state.AccessLogFilter, error) {
	if depth > maxFilterDepth {
		return nil, fmt.Errorf("filters nested more than %d levels", maxFilterDepth)
	}
	switch s := f.GetFilterSpecifier().(type) {
	case *accesslogv3.AccessLogFilter_StatusCodeFilter:
		op, v, err := comparison(s.StatusCodeFilter.GetComparison())
		if err != nil {
			return nil, at("status_code_filter.comparison", err)
		}
		return &state.AccessLogFilter{Kind: state.FilterStatusCode, Op: op, Value: v}, nil
	case *accesslogv3.AccessLogFilter_DurationFilter:
		op, v, err := comparison(s.DurationFilter.GetComparison())
		if err != nil {
			return nil, at("duration_filter.comparison", err)
		}
		return &state.AccessLogFilter{Kind: state.FilterDuration, Op: op, Value: v}, nil
	case *accesslogv3.AccessLogFilter_NotHealthCheckFilter:
		return &state.AccessLogFilter{Kind: state.FilterNotHealthCheck}, nil
	case *accesslogv3.AccessLogFilter_RuntimeFilter:
		fr, err := fraction("runtime_filter.percent_sampled", s.RuntimeFilter.GetPercentSampled())
		if err != nil {
			return nil, err
		}
		return &state.AccessLogFilter{Kind: state.FilterRuntime, Sampled: fr,
			IndependentRandomness: s.RuntimeFilter.GetUseIndependentRandomness()}, nil
	case *accesslogv3.AccessLogFilter_AndFilter:
		return combine(state.FilterAnd, "and_filter", s.AndFilter.GetFilters(), depth)
	case *accesslogv3.AccessLogFilter_OrFilter:
		return combine(state.FilterOr, "or_filter", s.OrFilter.GetFilters(), depth)
	case nil:
		return nil, fmt.Errorf("filter_specifier is required")
	default:
		// Dropping a filter would log what it was meant to keep out (or
		// the reverse), so unknown kinds are rejected.
		return nil, fmt.Errorf("access log filter %T is not supported", s)
	}
}

func combine(kind state.AccessLogFilterKind, field string, fs []*accesslogv3.AccessLogFilter, depth int) (*state.AccessLogFilter, error) {
	if len(fs) < 2 {
		return nil, errAt(field+".filters", "at least two filters are required")
	}
	out := &state.AccessLogFilter{Kind: kind}
	for i, sub := range fs {
		d, err := decodeAccessLogFilter(sub, depth+1)
		if err != nil {
			return nil, at(field, atIndex("filters", i, err))
		}
		out.Filters = append(out.Filters, d)
	}
	return out, nil
}

func comparison(c *accesslogv3.ComparisonFilter) (state.CompareOp, uint64, error) {
	v := uint64(c.GetValue().GetDefaultValue())
	switch c.GetOp() {
	case accesslogv3.ComparisonFilter_EQ:
		return state.CompareEQ, v, nil
	case accesslogv3.ComparisonFilter_GE:
		return state.CompareGE, v, nil
	case accesslogv3.ComparisonFilter_LE:
		return state.CompareLE, v, nil
	}
	return 0, 0, errAt("op", "unknown value %d", c.GetOp())
}
