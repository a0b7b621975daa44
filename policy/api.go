package policy

// Request is the view of a request that routing needs. Implementations wrap
// the HTTP/1.1 codec's request and *http.Request for HTTP/2.
type Request interface {
	// Authority is the Host header / :authority, possibly with a port.
	Authority() string
	// Path is the request target in origin form, including any query.
	Path() string
	// Method is the request method, upper case.
	Method() string
	// Header returns the value of the named header (name is lower-case).
	// Several values are joined with ",". Pseudo headers ":authority",
	// ":path", ":method" and ":scheme" are answered too.
	Header(name string) (value string, ok bool)
}

// The functions the proxy calls live in files by concern:
//
//	vhost.go    SelectRoute (virtual host index + route scan)
//	match.go    MatchRoute, MatchString, header/query/grpc matching
//	cluster.go  PickCluster, PickWeighted
//	rewrite.go  RewritePath, RewriteHost
//	redirect.go RedirectLocation
//	header.go   Mutations, AppendMutations
//	hash.go     HashRequest, CookieValue
//	format.go   FormatValue, FormatContext
