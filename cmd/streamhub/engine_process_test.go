package main

import (
	"context"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/streamhub/streamhub/internal/redistest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// buildServer builds the server's binary into the test's directory.
func buildServer(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "streamhub")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

// serverEnv is this process's environment without StreamHub's settings,
// followed by env.
func serverEnv(env ...string) []string {
	return append(slicesWithout(os.Environ(), "STREAMHUB_"), env...)
}

// TestRedisEngineProcess runs the server as a process with the Redis engine
// set through the environment, as the deployments do: it serves, says which
// engine, Redis and instance it runs with, and on SIGTERM drains, closes
// the engine and exits 0.
func TestRedisEngineProcess(t *testing.T) {
	r := redistest.Start(t)
	bin := buildServer(t)
	srv := exec.Command(bin, "--grpc-addr", "127.0.0.1:0", "--admin-addr", "", "--http-addr", "",
		"--log-format", "json", "--metrics-log-interval", "0", "--drain-timeout", "2s")
	srv.Env = serverEnv("STREAMHUB_ENGINE=redis", "STREAMHUB_REDIS_ADDR=redis://"+r.Addr()+"/0", "STREAMHUB_REDIS_PREFIX=proc")
	stdout, err := srv.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- srv.Wait() }() // it closes stdout once the process has exited, not before
	defer func() {
		_ = srv.Process.Kill() // when the test failed before SIGTERM
		<-exited
	}()
	line := servingLine(t, stdout)
	for k, want := range map[string]string{"engine": "redis", "redis": "redis://" + r.Addr() + "/0", "redis_prefix": "proc"} {
		if line[k] != want {
			t.Errorf("serving line: %s = %v, want %q (line %v)", k, line[k], want, line)
		}
	}
	if inst, _ := line["instance"].(string); inst == "" {
		t.Errorf("serving line: no instance (line %v)", line)
	}

	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	cc, err := grpc.NewClient(line["grpc"].(string), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	alice := openStream(t, ctx, cc, "alice")
	publishAndEcho(t, alice, "lobby", []byte("hello"))

	if err := srv.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the deferred wait
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want status 0", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("the server did not exit after SIGTERM")
	}
}

// TestRedisEngineBadSettings: a server that cannot use the Redis it was
// given does not start, and says why — without a password it was given.
func TestRedisEngineBadSettings(t *testing.T) {
	r := redistest.Start(t)
	bin := buildServer(t)
	closed := closedPort(t)
	for _, tc := range []struct {
		name   string
		args   []string
		before func() // runs before the server starts
		status int
		want   []string
	}{
		{name: "redis without an address", args: []string{"--engine", "redis"}, status: 2,
			want: []string{"--engine redis needs --redis-addr"}},
		{name: "unknown engine", args: []string{"--engine", "etcd"}, status: 2,
			want: []string{`--engine must be memory or redis, not "etcd"`}},
		{name: "malformed URL", args: []string{"--engine", "redis", "--redis-addr", "redis://default:s3cret@redis example/0"}, status: 2,
			want: []string{"--redis-addr redis://***@redis example/0"}},
		{name: "nothing listening", args: []string{"--engine", "redis", "--redis-addr", "redis://default:s3cret@" + closed + "/0"}, status: 1,
			want: []string{"cannot start", "--engine redis: cannot connect to Redis at redis://***@" + closed + "/0"}},
		{name: "Redis not answering", args: []string{"--engine", "redis", "--redis-addr", r.Addr()}, before: r.Freeze, status: 1,
			want: []string{"cannot start", "cannot connect to Redis at " + r.Addr()}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.before != nil {
				tc.before()
			}
			ctx, cancel := context.WithTimeout(context.Background(), engineConnectTimeout+waitTimeout)
			defer cancel()
			args := append([]string{"--grpc-addr", "127.0.0.1:0", "--admin-addr", "", "--http-addr", "", "--log-format", "json"}, tc.args...)
			cmd := exec.CommandContext(ctx, bin, args...)
			cmd.Env = serverEnv()
			begun := time.Now()
			out, err := cmd.CombinedOutput()
			var exit *exec.ExitError
			if !errors.As(err, &exit) || exit.ExitCode() != tc.status {
				t.Fatalf("exit %v after %v, want status %d; output:\n%s", err, time.Since(begun), tc.status, out)
			}
			for _, want := range tc.want {
				if !strings.Contains(string(out), want) {
					t.Errorf("the output does not say %q:\n%s", want, out)
				}
			}
			if strings.Contains(string(out), "s3cret") {
				t.Errorf("the output shows the password:\n%s", out)
			}
		})
	}
}

// closedPort is a loopback host:port nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}
