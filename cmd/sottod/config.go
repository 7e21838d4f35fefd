package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// config is every setting of sottod. Each one is a flag and a SOTTO_*
// environment variable; a flag given on the command line wins over the
// environment, which wins over the default.
type config struct {
	Mode string // "all", "relay" or "keyserver"

	Listen          string
	AdminListen     string
	PublicURL       string
	DataDir         string
	TLSCert         string
	TLSKey          string
	AllowPlainHTTP  bool
	TrustedProxies  []netip.Prefix
	LogFormat       string
	LogLevel        string
	ShutdownTimeout time.Duration

	KeyServerURL string // relay mode: where JWKS and device lists come from
	RelayURL     string // keyserver mode: where purge requests go

	Retention      time.Duration
	MaxBlobSize    int64
	QueueMessages  int
	QueueBytes     int64
	PushAllowHosts []string
}

func envName(flagName string) string {
	return "SOTTO_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

const usageHeader = `sottod: the Sotto server (relay and key server)

Usage:
  sottod [flags]              serve relay and key server on one port
  sottod relay [flags]        serve only the relay (tokens verified via --keyserver-url)
  sottod keyserver [flags]    serve only the key server (purges sent to --relay-url)
  sottod backup [--data DIR] OUT   ask the running server for a consistent copy into OUT
  sottod restore BACKUP DIR   restore a backup into an empty data directory
  sottod version

Every flag can also be set with the environment variable shown beside it.

Example:
  sottod --listen :7340 --data /var/lib/sotto

Flags:
`

// errUsage marks configuration errors: sottod prints them on one line and
// exits with status 2 before starting anything.
var errUsage = errors.New("usage")

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return errUsage }

func usagef(format string, args ...any) error { return &usageError{fmt.Sprintf(format, args...)} }

// parseConfig reads flags (args) over environment (getenv) over defaults.
func parseConfig(mode string, args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{Mode: mode}
	fs := flag.NewFlagSet("sottod", flag.ContinueOnError)
	fs.SetOutput(io.Discard)

	var trusted, pushHosts string
	str := func(p *string, name, def, usage string) {
		if v := getenv(envName(name)); v != "" {
			def = v
		}
		fs.StringVar(p, name, def, usage)
	}
	str(&c.Listen, "listen", "127.0.0.1:7340", "address to serve HTTP(S) on")
	str(&c.AdminListen, "admin-listen", "", "separate address for /healthz, /readyz and /metrics (default: on --listen)")
	str(&c.PublicURL, "public-url", "", "URL clients use to reach this server; names it in tokens (default: derived from --listen)")
	str(&c.DataDir, "data", "sotto-data", "data directory (created if missing)")
	str(&c.TLSCert, "tls-cert", "", "TLS certificate file (PEM); reloaded on SIGHUP")
	str(&c.TLSKey, "tls-key", "", "TLS private key file (PEM)")
	str(&trusted, "trusted-proxies", "", "comma-separated CIDRs whose X-Forwarded-For is believed")
	str(&c.LogFormat, "log-format", "text", "log format: text or json")
	str(&c.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	str(&c.KeyServerURL, "keyserver-url", "", "relay mode: base URL of the key server")
	str(&c.RelayURL, "relay-url", "", "keyserver mode: base URL of the relay")
	str(&pushHosts, "push-allow-hosts", "", "comma-separated hosts that push wakeups may be sent to")

	boolean := func(p *bool, name string, def bool, usage string) error {
		if v := getenv(envName(name)); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return usagef("%s: not a boolean: %q", envName(name), v)
			}
			def = b
		}
		fs.BoolVar(p, name, def, usage)
		return nil
	}
	duration := func(p *time.Duration, name string, def time.Duration, usage string) error {
		if v := getenv(envName(name)); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				return usagef("%s: not a duration: %q", envName(name), v)
			}
			def = d
		}
		fs.DurationVar(p, name, def, usage)
		return nil
	}
	integer := func(p *int64, name string, def int64, usage string) error {
		if v := getenv(envName(name)); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return usagef("%s: not an integer: %q", envName(name), v)
			}
			def = n
		}
		fs.Int64Var(p, name, def, usage)
		return nil
	}
	var queueMessages int64
	for _, err := range []error{
		boolean(&c.AllowPlainHTTP, "allow-plain-http", false, "serve plain HTTP on a non-loopback address (TLS is terminated by a proxy in front)"),
		duration(&c.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "how long a graceful shutdown may take"),
		duration(&c.Retention, "retention", 30*24*time.Hour, "default retention of undelivered messages and blobs"),
		integer(&c.MaxBlobSize, "max-blob-size", 100<<20, "largest attachment blob in bytes"),
		integer(&queueMessages, "queue-max-messages", 10000, "most messages held for one device"),
		integer(&c.QueueBytes, "queue-max-bytes", 64<<20, "most bytes held for one device"),
	} {
		if err != nil {
			return nil, err
		}
	}
	printUsage := func() {
		fmt.Fprint(stderr, usageHeader)
		fs.VisitAll(func(f *flag.Flag) {
			fmt.Fprintf(stderr, "  --%s (%s, default %q)\n      %s\n", f.Name, envName(f.Name), f.DefValue, f.Usage)
		})
	}
	fs.Usage = func() {} // errors are reported on one line below
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printUsage()
			return nil, flag.ErrHelp
		}
		return nil, usagef("%v", err)
	}
	if fs.NArg() > 0 {
		return nil, usagef("unexpected argument %q", fs.Arg(0))
	}
	c.QueueMessages = int(queueMessages)
	var err error
	if c.TrustedProxies, err = parsePrefixes(trusted); err != nil {
		return nil, err
	}
	c.PushAllowHosts = splitList(pushHosts)
	return c, c.validate()
}

func (c *config) validate() error {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		return usagef("--listen %q: %v", c.Listen, err)
	}
	if c.AdminListen != "" {
		if _, _, err := net.SplitHostPort(c.AdminListen); err != nil {
			return usagef("--admin-listen %q: %v", c.AdminListen, err)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return usagef("--tls-cert and --tls-key must be given together")
	}
	if c.TLSCert == "" && !c.AllowPlainHTTP && !isLoopback(c.Listen) {
		return usagef("refusing plain HTTP on %s, which is not a loopback address: give --tls-cert and --tls-key, or --allow-plain-http when a TLS proxy is in front", c.Listen)
	}
	for _, f := range []string{c.TLSCert, c.TLSKey} {
		if f == "" {
			continue
		}
		fh, err := os.Open(f)
		if err != nil {
			return usagef("cannot read TLS file: %v", err)
		}
		fh.Close()
	}
	switch c.LogFormat {
	case "text", "json":
	default:
		return usagef("--log-format must be text or json, not %q", c.LogFormat)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return usagef("--log-level must be debug, info, warn or error, not %q", c.LogLevel)
	}
	if c.ShutdownTimeout <= 0 {
		return usagef("--shutdown-timeout must be positive")
	}
	if c.Retention < time.Minute || c.Retention > 365*24*time.Hour {
		return usagef("--retention must be between 1m and 8760h")
	}
	if c.MaxBlobSize <= 0 || c.QueueMessages <= 0 || c.QueueBytes <= 0 {
		return usagef("size and quota limits must be positive")
	}
	if c.Mode == "relay" && c.KeyServerURL == "" {
		return usagef("sottod relay needs --keyserver-url")
	}
	if c.Mode == "keyserver" && c.RelayURL == "" {
		return usagef("sottod keyserver needs --relay-url")
	}
	if err := checkWritableDir(c.DataDir); err != nil {
		return err
	}
	if c.PublicURL == "" {
		scheme := "http"
		if c.TLSCert != "" {
			scheme = "https"
		}
		c.PublicURL = scheme + "://" + c.Listen
	}
	return nil
}

// isLoopback reports whether a listen address binds only the loopback
// interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// checkWritableDir creates dir if needed and proves it is writable.
func checkWritableDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return usagef("data directory %q: %v", dir, err)
	}
	probe, err := os.CreateTemp(dir, ".probe-*")
	if err != nil {
		return usagef("data directory %q is not writable: %v", dir, errors.Unwrap(err))
	}
	name := probe.Name()
	probe.Close()
	os.Remove(name)
	return nil
}

func parsePrefixes(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, part := range splitList(s) {
		p, err := netip.ParsePrefix(part)
		if err != nil {
			return nil, usagef("--trusted-proxies: %q is not a CIDR", part)
		}
		out = append(out, p)
	}
	return out, nil
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// dataPath names a file or directory inside the data directory.
func (c *config) dataPath(elem ...string) string {
	return filepath.Join(append([]string{c.DataDir}, elem...)...)
}
