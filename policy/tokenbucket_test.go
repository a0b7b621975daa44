package policy

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshlet/meshlet/state"
)

func TestTokenBucket(t *testing.T) {
	t0 := time.Unix(1000, 0)
	type step struct {
		at   time.Duration // since t0
		want bool
	}
	tests := []struct {
		name  string
		spec  state.TokenBucket
		steps []step
	}{
		{"starts full then empties", state.TokenBucket{MaxTokens: 2, TokensPerFill: 1, FillInterval: time.Second},
			[]step{{0, true}, {0, true}, {0, false}, {999 * time.Millisecond, false}}},
		{"refills one per interval", state.TokenBucket{MaxTokens: 2, TokensPerFill: 1, FillInterval: time.Second},
			[]step{{0, true}, {0, true}, {time.Second, true}, {time.Second, false}, {2 * time.Second, true}}},
		{"refill capped at max", state.TokenBucket{MaxTokens: 2, TokensPerFill: 1, FillInterval: time.Second},
			[]step{{0, true}, {0, true}, {time.Hour, true}, {time.Hour, true}, {time.Hour, false}}},
		{"tokens per fill", state.TokenBucket{MaxTokens: 5, TokensPerFill: 3, FillInterval: 100 * time.Millisecond},
			[]step{{0, true}, {0, true}, {0, true}, {0, true}, {0, true}, {0, false},
				{150 * time.Millisecond, true}, {150 * time.Millisecond, true}, {150 * time.Millisecond, true}, {150 * time.Millisecond, false}}},
		// Fills are on boundaries from creation: at 1.5s one fill happened
		// (at 1s), and the next is at 2s, not 2.5s.
		{"boundaries do not drift", state.TokenBucket{MaxTokens: 1, TokensPerFill: 1, FillInterval: time.Second},
			[]step{{0, true}, {1500 * time.Millisecond, true}, {1999 * time.Millisecond, false}, {2 * time.Second, true}}},
		{"zero tokens per fill means one", state.TokenBucket{MaxTokens: 1, FillInterval: time.Second},
			[]step{{0, true}, {0, false}, {time.Second, true}}},
		{"years of idleness do not overflow", state.TokenBucket{MaxTokens: 3, TokensPerFill: 1 << 31, FillInterval: time.Millisecond},
			[]step{{0, true}, {0, true}, {0, true}, {0, false}, {200 * 365 * 24 * time.Hour, true}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := NewTokenBucket(tt.spec, t0)
			for i, s := range tt.steps {
				if got := b.Take(t0.Add(s.at)); got != s.want {
					t.Fatalf("step %d at %v: Take = %v, want %v", i, s.at, got, s.want)
				}
			}
		})
	}
}

func TestTokenBucketConcurrent(t *testing.T) {
	now := time.Unix(1000, 0)
	b := NewTokenBucket(state.TokenBucket{MaxTokens: 100, TokensPerFill: 1, FillInterval: time.Hour}, now)
	var got atomic.Int64
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				if b.Take(now) {
					got.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	if got.Load() != 100 {
		t.Fatalf("%d tokens taken by 400 concurrent attempts, want exactly 100", got.Load())
	}
}
