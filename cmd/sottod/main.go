// Command sottod is the Sotto server: the relay and the key server in one
// process on one port, or either alone. Run it with no arguments to serve
// both with an embedded data directory; run `sottod --help` for every
// setting. OPERATIONS.md describes how to run it in production.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes.
const (
	exitOK     = 0
	exitError  = 1
	exitConfig = 2
)

// run is main without the process: it returns the exit code.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	mode := "all"
	if len(args) > 0 {
		switch args[0] {
		case "relay", "keyserver":
			mode, args = args[0], args[1:]
		case "backup":
			return runBackup(ctx, args[1:], getenv, stdout, stderr)
		case "restore":
			return runRestore(args[1:], stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, "sottod", version)
			return exitOK
		}
	}
	cfg, err := parseConfig(mode, args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "sottod: error: %v\n", err)
		if errors.Is(err, errUsage) {
			fmt.Fprintln(stderr, "sottod: hint: run sottod --help for every setting")
			return exitConfig
		}
		return exitError
	}
	logger := newLogger(cfg, stderr)
	if err := serve(ctx, cfg, getenv, logger, stdout); err != nil {
		fmt.Fprintf(stderr, "sottod: error: %v\n", err)
		if errors.Is(err, errUsage) {
			return exitConfig
		}
		return exitError
	}
	return exitOK
}

func newLogger(cfg *config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated in parseConfig
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// certReloader serves the TLS certificate from files and reloads it on
// SIGHUP, keeping the previous one if the new files do not load.
type certReloader struct {
	certFile, keyFile string
	mu                sync.RWMutex
	cert              *tls.Certificate
}

func newCertReloader(certFile, keyFile string) (*certReloader, error) {
	r := &certReloader{certFile: certFile, keyFile: keyFile}
	if err := r.reload(); err != nil {
		return nil, usagef("TLS: %v", err)
	}
	return r, nil
}

func (r *certReloader) reload() error {
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.cert = &cert
	r.mu.Unlock()
	return nil
}

func (r *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.cert, nil
}

// watchSIGHUP reloads the certificate on every SIGHUP until ctx ends.
func (r *certReloader) watchSIGHUP(ctx context.Context, logger *slog.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			if err := r.reload(); err != nil {
				logger.Error("TLS certificate reload failed; keeping the previous one", "err", err)
			} else {
				logger.Info("TLS certificate reloaded")
			}
		}
	}
}

// listenAndServe runs srv on ln until ctx ends, then shuts it down within
// timeout.
func listenAndServe(ctx context.Context, srv *http.Server, ln net.Listener, tlsOn bool, timeout time.Duration) error {
	errc := make(chan error, 1)
	go func() {
		var err error
		if tlsOn {
			err = srv.ServeTLS(ln, "", "")
		} else {
			err = srv.Serve(ln)
		}
		errc <- err
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return srv.Shutdown(sctx)
}
