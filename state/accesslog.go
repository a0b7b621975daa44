package state

// AccessLogSink says where an access log writes.
type AccessLogSink int

const (
	// AccessLogFile is envoy.access_loggers.file; Path names the file
	// (/dev/stdout and /dev/stderr included).
	AccessLogFile AccessLogSink = iota
	// AccessLogStdout is envoy.access_loggers.stdout.
	AccessLogStdout
	// AccessLogStderr is envoy.access_loggers.stderr.
	AccessLogStderr
)

// AccessLog mirrors envoy.config.accesslog.v3.AccessLog with the file and
// stream loggers. Format strings are kept as text: telemetry compiles them
// once per configuration, not per request.
type AccessLog struct {
	Name string
	Sink AccessLogSink
	// Path is the file for AccessLogFile.
	Path string
	// Text is the format string; empty with JSON nil means Envoy's default
	// format.
	Text string
	// JSON, when set, is a format dictionary (json_format): one JSON object
	// per line.
	JSON []AccessLogJSONField
	// OmitEmptyValues drops empty values (text) or null fields (JSON).
	OmitEmptyValues bool
	// Filter, when set, decides which records are written.
	Filter *AccessLogFilter
}

// AccessLogJSONField is one key of a format dictionary: exactly one of
// Format (a string with command operators), Nested and Literal is set.
type AccessLogJSONField struct {
	Key    string
	Format string
	Nested []AccessLogJSONField
	// Literal is the JSON encoding of a number, bool or null value that is
	// written as is.
	Literal string
	// IsFormat distinguishes an empty format string from a literal.
	IsFormat bool
}

// AccessLogFilterKind is the filter_specifier of an AccessLogFilter.
type AccessLogFilterKind int

const (
	FilterStatusCode AccessLogFilterKind = iota
	FilterDuration
	FilterNotHealthCheck
	FilterRuntime
	FilterAnd
	FilterOr
)

// CompareOp is ComparisonFilter.Op.
type CompareOp int

const (
	CompareEQ CompareOp = iota
	CompareGE
	CompareLE
)

// AccessLogFilter mirrors the supported AccessLogFilter kinds.
type AccessLogFilter struct {
	Kind AccessLogFilterKind
	// Op and Value compare the response code (FilterStatusCode) or the
	// duration in milliseconds (FilterDuration).
	Op    CompareOp
	Value uint64
	// Sampled is the runtime_filter's percent_sampled (the runtime key
	// is not consulted: meshlet has no runtime). IndependentRandomness
	// ignores x-request-id.
	Sampled               Fraction
	IndependentRandomness bool
	// Filters are the operands of FilterAnd and FilterOr.
	Filters []*AccessLogFilter
}
