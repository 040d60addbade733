package configexport

import (
	"math/rand"
	"strings"
	"testing"
)

// lcs is the textbook dynamic programme, to check that DiffLines is minimal.
func lcs(a, b []string) int {
	dp := make([][]int, len(a)+1)
	for i := range dp {
		dp[i] = make([]int, len(b)+1)
	}
	for i := len(a) - 1; i >= 0; i-- {
		for j := len(b) - 1; j >= 0; j-- {
			if a[i] == b[j] {
				dp[i][j] = dp[i+1][j+1] + 1
			} else {
				dp[i][j] = max(dp[i+1][j], dp[i][j+1])
			}
		}
	}
	return dp[0][0]
}

func TestDiffLinesIsCorrectAndMinimal(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	words := []string{"a", "b", "c", "d", "e"}
	gen := func() []string {
		out := make([]string, rng.Intn(14))
		for i := range out {
			out[i] = words[rng.Intn(len(words))]
		}
		return out
	}
	for i := 0; i < 3000; i++ {
		a, b := gen(), gen()
		edits := DiffLines(a, b)
		var ga, gb []string
		for _, e := range edits {
			if e.Op != '+' {
				ga = append(ga, e.Line)
			}
			if e.Op != '-' {
				gb = append(gb, e.Line)
			}
		}
		if strings.Join(ga, ",") != strings.Join(a, ",") || strings.Join(gb, ",") != strings.Join(b, ",") {
			t.Fatalf("diff of %v -> %v does not reproduce them: %v", a, b, edits)
		}
		add, del := Counts(edits)
		if want := len(a) + len(b) - 2*lcs(a, b); add+del != want {
			t.Fatalf("diff of %v -> %v has %d edits, minimum is %d", a, b, add+del, want)
		}
	}
}

func TestUnifiedFormat(t *testing.T) {
	a := SplitLines("1\n2\n3\n4\n5\n6\n7\n8\n9\n10\n11\n12\n")
	b := SplitLines("1\n2\nthree\n4\n5\n6\n7\n8\n9\n10\n11\n12\n13\n")
	got := Unified("old", "new", DiffLines(a, b), 2)
	want := "--- old\n+++ new\n@@ -1,5 +1,5 @@\n 1\n 2\n-3\n+three\n 4\n 5\n@@ -11,2 +11,3 @@\n 11\n 12\n+13\n"
	if got != want {
		t.Errorf("unified:\n%s\nwant:\n%s", got, want)
	}
	if Unified("a", "b", DiffLines(a, a), 3) != "" {
		t.Error("equal inputs gave a diff")
	}
	// An empty side is a single hunk naming line 0.
	if got := Unified("a", "b", DiffLines(nil, []string{"x"}), 3); got != "--- a\n+++ b\n@@ -0,0 +1 @@\n+x\n" {
		t.Errorf("from empty: %q", got)
	}
}

func TestDiffLargeRewriteStaysBounded(t *testing.T) {
	a, b := make([]string, 20000), make([]string, 20000)
	for i := range a {
		a[i], b[i] = "old line", "new line"
	}
	add, del := Counts(DiffLines(a, b))
	if add != 20000 || del != 20000 {
		t.Errorf("rewrite: +%d -%d", add, del)
	}
}
