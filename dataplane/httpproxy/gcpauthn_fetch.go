package httpproxy

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/meshlet/meshlet/state"
)

// maxTokenBytes bounds a metadata server reply: ID tokens are around 1 KiB,
// and an endless body must not hold a request forever or eat memory.
const maxTokenBytes = 64 << 10

// errTokenPermanent marks a fetch failure that retrying cannot fix (the
// server answered, but with something that is not a usable token).
var errTokenPermanent = errors.New("not retryable")

// tokenFetcher fetches ID tokens from the GCE metadata server as the gcp_authn
// config says.
type tokenFetcher struct {
	cfg *state.GCPAuthnFilter
	// client has keep-alives off: tokens are fetched about once an hour per
	// audience, so a pooled connection would only hold an idle goroutine
	// (and an fd) per filter config for nothing.
	client *http.Client
}

func newTokenFetcher(cfg *state.GCPAuthnFilter) *tokenFetcher {
	return &tokenFetcher{cfg: cfg, client: &http.Client{
		// No Proxy: the metadata server is link-local and must not be
		// reached through an HTTP proxy from the environment.
		Transport: &http.Transport{DisableKeepAlives: true},
		// The metadata server does not redirect; following one could leak
		// the Metadata-Flavor request to another host.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// fetch returns a token for audience and its expiry, retrying as
// retry_policy allows. ctx is not the request's: a client that goes away
// must not fail the fetch other requests are waiting on.
func (f *tokenFetcher) fetch(ctx context.Context, audience string) (string, time.Time, error) {
	u := strings.ReplaceAll(f.cfg.URI, state.GCPAudiencePlaceholder, url.QueryEscape(audience))
	backoff := f.cfg.RetryBase
	for attempt := uint32(0); ; attempt++ {
		tok, exp, err := f.once(ctx, u)
		if err == nil {
			return tok, exp, nil
		}
		if attempt >= f.cfg.Retries || errors.Is(err, errTokenPermanent) {
			if attempt > 0 {
				err = fmt.Errorf("%w (after %d attempts)", err, attempt+1)
			}
			return "", time.Time{}, err
		}
		// Full jitter, as Envoy's backoff strategy: a fleet of proxies
		// restarted together must not hammer the server in lockstep.
		wait := time.Duration(rand.Int64N(int64(backoff)) + 1)
		if backoff *= 2; backoff > f.cfg.RetryMax {
			backoff = f.cfg.RetryMax
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return "", time.Time{}, err
		}
	}
}

// once is one metadata server request.
func (f *tokenFetcher) once(ctx context.Context, u string) (string, time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, f.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %v", errTokenPermanent, err)
	}
	req.Header.Set("Metadata-Flavor", "Google")
	resp, err := f.client.Do(req)
	if err != nil {
		return "", time.Time{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBytes+1))
	if err != nil {
		return "", time.Time{}, fmt.Errorf("reading token: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		err := fmt.Errorf("metadata server answered %s", resp.Status)
		// 4xx (bad audience, missing Metadata-Flavor) will not change on
		// retry; 429 and 5xx may.
		if resp.StatusCode < 500 && resp.StatusCode != http.StatusTooManyRequests {
			err = fmt.Errorf("%w: %w", errTokenPermanent, err)
		}
		return "", time.Time{}, err
	}
	if len(body) > maxTokenBytes {
		return "", time.Time{}, fmt.Errorf("%w: token longer than %d bytes", errTokenPermanent, maxTokenBytes)
	}
	tok := string(bytes.TrimSpace(body))
	exp, err := jwtExpiry(tok)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("%w: %w", errTokenPermanent, err)
	}
	return tok, exp, nil
}

// jwtExpiry reads the exp claim of a JWT without verifying the signature:
// the proxy only needs to know when to fetch a new token; the upstream
// verifies it. A token that is not a JWT with exp is rejected, since we
// could not tell when to stop sending it.
func jwtExpiry(tok string) (time.Time, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" {
		return time.Time{}, errors.New("token is not a JWT (want header.payload.signature)")
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return time.Time{}, errors.New("token contains whitespace")
	}
	payload, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, fmt.Errorf("JWT payload: %w", err)
	}
	var claims struct {
		Exp *json.Number `json:"exp"`
	}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return time.Time{}, fmt.Errorf("JWT payload: %w", err)
	}
	if claims.Exp == nil {
		return time.Time{}, errors.New("JWT has no exp claim")
	}
	secs, err := claims.Exp.Float64()
	if err != nil || secs <= 0 || secs > 1<<40 {
		return time.Time{}, fmt.Errorf("JWT exp %q is not a valid time", claims.Exp.String())
	}
	return time.Unix(int64(secs), 0), nil
}
