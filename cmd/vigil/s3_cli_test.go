package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilops/vigil/storage/blob/s3/s3test"
	"github.com/vigilops/vigil/storage/repo"
)

// s3Servers returns the S3 test servers started by scripts/s3-servers.sh
// (.ci/run does it). In CI a missing server is a failure, not a skip.
func s3Servers(t *testing.T) map[string][3]string {
	out := map[string][3]string{}
	for _, name := range []string{"MINIO", "VERSITYGW"} {
		ep := os.Getenv("VIGIL_TEST_" + name + "_ENDPOINT")
		if ep == "" {
			if os.Getenv("CI") == "true" {
				t.Fatalf("VIGIL_TEST_%s_ENDPOINT is not set: .ci/run must start the S3 servers (scripts/s3-servers.sh)", name)
			}
			continue
		}
		out[strings.ToLower(name)] = [3]string{ep, os.Getenv("VIGIL_TEST_" + name + "_ACCESS_KEY"), os.Getenv("VIGIL_TEST_" + name + "_SECRET_KEY")}
	}
	if len(out) == 0 {
		t.Skip("no S3 test servers: run scripts/s3-servers.sh start ENVFILE and source it (integration test)")
	}
	return out
}

func randomBucket() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "vigil-cli-" + hex.EncodeToString(b)
}

func s3Env(t *testing.T, srv [3]string) *env {
	e := newEnv(t)
	e.repo = "s3:" + srv[0] + "/" + randomBucket() + "/repo"
	e.extra = []string{"AWS_ACCESS_KEY_ID=" + srv[1], "AWS_SECRET_ACCESS_KEY=" + srv[2], "AWS_PROFILE=", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
	return e
}

func TestS3RepositoryRoundTrip(t *testing.T) {
	for name, srv := range s3Servers(t) {
		t.Run(name, func(t *testing.T) {
			e := s3Env(t, srv)
			src := t.TempDir()
			writeDemoData(src, 3)
			r := e.must("init")
			if !strings.Contains(r.stdout, "created bucket") {
				t.Fatalf("init did not say it created the bucket: %s", r.stdout)
			}
			e.must("backup", "--job", "files", src)
			if err := changeDemoData(src); err != nil {
				t.Fatal(err)
			}
			s := summary(t, e.must("backup", "--json", "--job", "files", src).stdout)
			if s["files_unchanged"].(float64) == 0 {
				t.Fatalf("second backup did not use its parent: %v", s)
			}
			target := t.TempDir()
			e.must("restore", "latest", "--target", target)
			sameTree(t, src, repo.TargetPath(target, src))
			e.must("check", "--read-data")
			e.must("forget", "--keep-last", "1", "--prune")
			e.must("check", "--read-data")
			target = t.TempDir()
			e.must("restore", "latest", "--target", target)
			sameTree(t, src, repo.TargetPath(target, src))
		})
	}
}

func TestS3TwoHostsBackUpAtOnce(t *testing.T) {
	for name, srv := range s3Servers(t) {
		t.Run(name, func(t *testing.T) {
			e := s3Env(t, srv)
			e.must("init", "--pack-size", "4")
			srcs := []string{t.TempDir(), t.TempDir()}
			for i, s := range srcs {
				writeDemoData(s, uint64(10+i))
			}
			var wg sync.WaitGroup
			results := make([]result, 2)
			for i := range srcs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					results[i] = e.run("backup", "--host", fmt.Sprintf("host-%d", i), srcs[i])
				}()
			}
			wg.Wait()
			for i, r := range results {
				if r.code != 0 {
					t.Fatalf("backup %d: exit %d: %s", i, r.code, r.stderr)
				}
			}
			e.must("check", "--read-data")
			out := e.must("snapshots", "--json").stdout
			if n := strings.Count(out, "\n"); n != 2 {
				t.Fatalf("%d snapshots after two concurrent backups", n)
			}
			for i, s := range srcs {
				target := t.TempDir()
				r := e.must("snapshots", "--json", "--host", fmt.Sprintf("host-%d", i))
				id := r.stdout[strings.Index(r.stdout, `"id":"`)+6:][:64]
				e.must("restore", id, "--target", target)
				sameTree(t, s, repo.TargetPath(target, s))
			}
		})
	}
}

func TestS3Errors(t *testing.T) {
	for name, srv := range s3Servers(t) {
		t.Run(name, func(t *testing.T) {
			e := s3Env(t, srv)
			e.must("init")
			bad := *e
			bad.extra = []string{"AWS_ACCESS_KEY_ID=" + srv[1], "AWS_SECRET_ACCESS_KEY=wrong-secret", "AWS_CONFIG_FILE=/dev/null", "AWS_SHARED_CREDENTIALS_FILE=/dev/null"}
			r := bad.run("snapshots")
			if r.code != exitError || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 || strings.Contains(r.stderr, "wrong-secret") {
				t.Fatalf("wrong credentials: exit %d, %q", r.code, r.stderr)
			}
			// A missing bucket holds no repository: exit 10, as for an empty
			// directory, with the store's hint naming the bucket.
			missing := *e
			bucket := randomBucket()
			missing.repo = "s3:" + srv[0] + "/" + bucket
			for _, args := range [][]string{{"restore", "latest", "--target", t.TempDir()}, {"snapshots"}} {
				r = missing.run(args...)
				if r.code != exitNoRepo || !strings.Contains(r.stderr, "no repository") || !strings.Contains(r.stderr, `bucket "`+bucket+`"`) ||
					!strings.Contains(r.stderr, "bucket does not exist") || strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
					t.Fatalf("%s with a missing bucket: exit %d, want %d; %q", args[0], r.code, exitNoRepo, r.stderr)
				}
			}
			gone := *e
			gone.repo = "s3:http://127.0.0.1:1/some-bucket"
			start := time.Now()
			r = gone.run("snapshots")
			if r.code != exitError || time.Since(start) > 60*time.Second || !strings.Contains(r.stderr, "connection refused") {
				t.Fatalf("unreachable endpoint: exit %d after %s, %q", r.code, time.Since(start), r.stderr)
			}
		})
	}
}

// TestS3PruneBesideBackup: prune needs an exclusive lock, so beside a running
// backup it refuses with exit 11 and names the holder, and the backup is not
// disturbed; once the backup is done, prune runs. The backup goes through a
// proxy that trickles bodies so that it is still running when prune starts.
func TestS3PruneBesideBackup(t *testing.T) {
	for name, srv := range s3Servers(t) {
		t.Run(name, func(t *testing.T) {
			direct := s3Env(t, srv)
			direct.must("init", "--pack-size", "1")
			src := t.TempDir()
			writeFaultData(t, src, 4, 3)
			direct.must("backup", src)
			p := s3test.NewFaultProxy(t, srv[0], 0)
			p.Slow = 50 * time.Millisecond // about 0.6 MB/s per connection
			slow := viaEndpoint(direct, srv[0], p.URL())

			// 6 MiB of new data: seconds through the slow proxy.
			src2 := t.TempDir()
			writeFaultData(t, src2, 6, 4)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			start := time.Now()
			bk := slow.cmd(ctx, "backup", src2)
			var bkErr bytes.Buffer
			bk.Stderr = &bkErr
			if err := bk.Start(); err != nil {
				t.Fatal(err)
			}
			// Wait until the backup holds its lock.
			deadline := time.Now().Add(time.Minute)
			for !strings.Contains(direct.must("locks", "--json").stdout, `"operation":"backup"`) {
				if time.Now().After(deadline) {
					t.Fatal("the backup never took its lock")
				}
				time.Sleep(50 * time.Millisecond)
			}
			for _, args := range [][]string{{"prune"}, {"forget", "--keep-last", "1", "--prune"}} {
				r := direct.run(args...)
				if r.code != exitLocked || !strings.Contains(r.stderr, "locked") || !strings.Contains(r.stderr, "backup") ||
					strings.Count(strings.TrimSpace(r.stderr), "\n") != 0 {
					t.Fatalf("%s beside a running backup: exit %d, want %d; %q", args[0], r.code, exitLocked, r.stderr)
				}
			}
			refused := time.Since(start)
			if err := bk.Wait(); err != nil {
				t.Fatalf("backup beside a refused prune: %v\n%s", err, bkErr.String())
			}
			t.Logf("prune refused %s into the backup, which took %s", refused.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
			direct.must("forget", "--keep-last", "1", "--prune")
			direct.must("check", "--read-data")
			target := t.TempDir()
			direct.must("restore", "latest", "--target", target)
			sameTree(t, src2, repo.TargetPath(target, src2))
		})
	}
}
