// Command pullfloor serves a repository for bench/pull.sh and measures the
// floor a pull is compared with.
//
//	pullfloor serve DIR ADDRFILE
//	    serves DIR over HTTP on a free 127.0.0.1 port (written to
//	    ADDRFILE) like any static web server; GET /.stats returns and
//	    resets the count of body bytes and requests served.
//	pullfloor fetch [-verity] [-jobs N] URL LISTFILE
//	    GETs every path of LISTFILE from URL with N workers and discards
//	    the bodies (the loopback I/O floor), or with -verity also computes
//	    each body's fs-verity digest (the floor of a verified pull that
//	    does not write anything).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cfs-deploy/cfs-deploy/internal/verity"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	switch os.Args[1] {
	case "serve":
		serve(os.Args[2:])
	case "fetch":
		fetch(os.Args[2:])
	default:
		usage()
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: pullfloor serve DIR ADDRFILE | pullfloor fetch [-verity] [-jobs N] URL LISTFILE")
	os.Exit(2)
}

type counter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (c counter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n.Add(int64(n))
	return n, err
}

func serve(args []string) {
	if len(args) != 2 {
		usage()
	}
	var bytes, requests atomic.Int64
	files := http.FileServer(http.Dir(args[0]))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/.stats" {
			json.NewEncoder(w).Encode(map[string]int64{"bytes": bytes.Swap(0), "requests": requests.Swap(0)})
			return
		}
		requests.Add(1)
		// As a web server configured with a default type does: no
		// reading the start of every file to guess one.
		w.Header().Set("Content-Type", "application/octet-stream")
		files.ServeHTTP(counter{w, &bytes}, r)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if err := os.WriteFile(args[1], []byte("http://"+l.Addr().String()), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	http.Serve(l, h)
}

func fetch(args []string) {
	fs := flag.NewFlagSet("fetch", flag.ExitOnError)
	withVerity := fs.Bool("verity", false, "")
	jobs := fs.Int("jobs", 8, "")
	fs.Parse(args)
	if fs.NArg() != 2 {
		usage()
	}
	base := strings.TrimRight(fs.Arg(0), "/")
	f, err := os.Open(fs.Arg(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var paths []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		paths = append(paths, sc.Text())
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = *jobs + 2
	t.DisableCompression = true
	client := &http.Client{Transport: t}
	work := make(chan string)
	var total atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range *jobs {
		wg.Go(func() {
			buf := make([]byte, 64<<10)
			h := verity.NewHasher()
			for p := range work {
				resp, err := client.Get(base + "/" + p)
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				var w io.Writer = io.Discard
				if *withVerity {
					h.Reset()
					w = h
				}
				n, err := io.CopyBuffer(w, resp.Body, buf)
				resp.Body.Close()
				if err != nil || resp.StatusCode != 200 {
					fmt.Fprintln(os.Stderr, p, resp.Status, err)
					os.Exit(1)
				}
				if *withVerity {
					h.Sum()
				}
				total.Add(n)
			}
		})
	}
	for _, p := range paths {
		work <- p
	}
	close(work)
	wg.Wait()
	el := time.Since(start)
	fmt.Printf("%d files, %d bytes in %.3fs (%.0f MiB/s)\n", len(paths), total.Load(), el.Seconds(), float64(total.Load())/el.Seconds()/(1<<20))
}
