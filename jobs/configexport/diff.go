package configexport

import (
	"fmt"
	"strings"
)

// Edit is one line of a line diff.
type Edit struct {
	Op   byte // ' ' kept, '-' removed, '+' added
	Line string
}

// maxEditDistance bounds the diff search. Beyond it (a config replaced
// wholesale) the differing middle is reported as removed then added: still
// a correct diff, only not minimal, and the search stays within O(D²) of
// memory.
const maxEditDistance = 2000

// DiffLines returns a line diff turning a into b: common prefix and suffix
// are peeled off, then Myers' greedy O(ND) search finds a shortest edit
// script for the middle.
func DiffLines(a, b []string) []Edit {
	pre := 0
	for pre < len(a) && pre < len(b) && a[pre] == b[pre] {
		pre++
	}
	suf := 0
	for suf < len(a)-pre && suf < len(b)-pre && a[len(a)-1-suf] == b[len(b)-1-suf] {
		suf++
	}
	var out []Edit
	for _, l := range a[:pre] {
		out = append(out, Edit{' ', l})
	}
	out = append(out, myers(a[pre:len(a)-suf], b[pre:len(b)-suf])...)
	for _, l := range a[len(a)-suf:] {
		out = append(out, Edit{' ', l})
	}
	return out
}

func myers(a, b []string) []Edit {
	n, m := len(a), len(b)
	if n == 0 || m == 0 {
		return replaceAll(a, b)
	}
	max := n + m
	if max > maxEditDistance {
		max = maxEditDistance
	}
	off := max + 1
	v := make([]int32, 2*max+3)
	// trace[d] is v as it was before step d (only the diagonals -d..d matter).
	var trace [][]int32
	found := -1
	for d := 0; d <= max && found < 0; d++ {
		snap := make([]int32, 2*d+1)
		copy(snap, v[off-d:off+d+1])
		trace = append(trace, snap)
		for k := -d; k <= d; k += 2 {
			var x int
			if k == -d || (k != d && v[off+k-1] < v[off+k+1]) {
				x = int(v[off+k+1]) // down: insert from b
			} else {
				x = int(v[off+k-1]) + 1 // right: delete from a
			}
			y := x - k
			for x < n && y < m && a[x] == b[y] {
				x++
				y++
			}
			v[off+k] = int32(x)
			if x >= n && y >= m {
				found = d
				break
			}
		}
	}
	if found < 0 {
		return replaceAll(a, b)
	}
	// Walk back through the trace from (n, m) to (0, 0).
	var rev []Edit
	x, y := n, m
	for d := found; d > 0; d-- {
		prev := trace[d] // v before step d: diagonals -(d-1)..(d-1) at index k+d
		get := func(k int) int { return int(prev[k+d]) }
		k := x - y
		var pk int
		if k == -d || (k != d && get(k-1) < get(k+1)) {
			pk = k + 1
		} else {
			pk = k - 1
		}
		px := get(pk)
		py := px - pk
		// The edit lands at (sx, sy); a snake of kept lines follows it.
		sx, sy := px+1, py
		if pk == k+1 {
			sx, sy = px, py+1
		}
		for x > sx && y > sy {
			rev = append(rev, Edit{' ', a[x-1]})
			x--
			y--
		}
		if pk == k+1 {
			rev = append(rev, Edit{'+', b[y-1]})
			y--
		} else {
			rev = append(rev, Edit{'-', a[x-1]})
			x--
		}
	}
	for x > 0 && y > 0 {
		rev = append(rev, Edit{' ', a[x-1]})
		x--
		y--
	}
	out := make([]Edit, len(rev))
	for i, e := range rev {
		out[len(rev)-1-i] = e
	}
	return out
}

func replaceAll(a, b []string) []Edit {
	out := make([]Edit, 0, len(a)+len(b))
	for _, l := range a {
		out = append(out, Edit{'-', l})
	}
	for _, l := range b {
		out = append(out, Edit{'+', l})
	}
	return out
}

// Counts returns how many lines were added and removed.
func Counts(edits []Edit) (added, removed int) {
	for _, e := range edits {
		switch e.Op {
		case '+':
			added++
		case '-':
			removed++
		}
	}
	return added, removed
}

// SplitLines splits text into lines without their newlines.
func SplitLines(text string) []string {
	if text == "" {
		return nil
	}
	return strings.Split(strings.TrimSuffix(text, "\n"), "\n")
}

// Unified formats edits as a unified diff with ctx lines of context.
func Unified(fromName, toName string, edits []Edit, ctx int) string {
	var b strings.Builder
	// Find the edit positions, then group them into hunks.
	type hunk struct{ start, end int } // [start, end) in edits
	var hunks []hunk
	for i, e := range edits {
		if e.Op == ' ' {
			continue
		}
		s, t := max(0, i-ctx), min(len(edits), i+ctx+1)
		if n := len(hunks); n > 0 && s <= hunks[n-1].end {
			hunks[n-1].end = t
			continue
		}
		hunks = append(hunks, hunk{s, t})
	}
	if len(hunks) == 0 {
		return ""
	}
	fmt.Fprintf(&b, "--- %s\n+++ %s\n", fromName, toName)
	// Line numbers before each edit index.
	aLine, bLine := make([]int, len(edits)+1), make([]int, len(edits)+1)
	for i, e := range edits {
		aLine[i+1], bLine[i+1] = aLine[i], bLine[i]
		if e.Op != '+' {
			aLine[i+1]++
		}
		if e.Op != '-' {
			bLine[i+1]++
		}
	}
	for _, h := range hunks {
		na, nb := aLine[h.end]-aLine[h.start], bLine[h.end]-bLine[h.start]
		fmt.Fprintf(&b, "@@ -%s +%s @@\n", hunkRange(aLine[h.start], na), hunkRange(bLine[h.start], nb))
		for _, e := range edits[h.start:h.end] {
			b.WriteByte(e.Op)
			b.WriteString(e.Line)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// hunkRange prints "start,count" the way diff(1) does: 1-based, and an
// empty range names the line before it.
func hunkRange(before, n int) string {
	switch n {
	case 0:
		return fmt.Sprintf("%d,0", before)
	case 1:
		return fmt.Sprintf("%d", before+1)
	}
	return fmt.Sprintf("%d,%d", before+1, n)
}
