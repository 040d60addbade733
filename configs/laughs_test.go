package configs

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestAliasBombBounded: nested merge keys expand exponentially; loading must
// stop early with an error instead of running for minutes.
func TestAliasBombBounded(t *testing.T) {
	var b strings.Builder
	b.WriteString("x0: &m0 {timeout: 1h, retries: 1}\n")
	for i := 1; i <= 9; i++ {
		refs := strings.TrimSuffix(strings.Repeat(fmt.Sprintf("*m%d, ", i-1), 10), ", ")
		fmt.Fprintf(&b, "x%d: &m%d {<<: [%s]}\n", i, i, refs)
	}
	b.WriteString("jobs:\n  - <<: *m9\n    name: j\n    kind: command\n    with: {argv: [x]}\n")
	start := time.Now()
	_, err := Parse("bomb.yaml", []byte(b.String()), Options{Kinds: fakeKinds{}})
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("alias bomb took %v", d)
	}
	if err == nil || !strings.Contains(err.Error(), "config is too large (more than 200000 values after expanding aliases)") {
		t.Fatalf("err = %v", err)
	}
}
