// The fan-out benchmark's load client, in Go: the same load as benchmarks/load.py's
// Python client, at a fraction of its CPU, so that the servers are what is measured.
//
// N streams over C connections (connection c dials addrs[c % len(addrs)] with client
// certificate c % len(certs)), all joined to one room in batches, each batch confirmed
// by a probe coming back to every stream of it. Then a throughput phase: S senders each
// keep W messages in flight (a sender's own copies count every sender's messages), for
// T seconds (never more than -max-lag messages ahead of the slowest member), then the room drains. Then a light phase at R messages/s whose delivery
// latencies are recorded (each message's text carries its send time). Lost is what a
// stream did not receive of what was posted after the joins.
//
// It talks to its caller on stdout/stdin so the caller can measure the servers' CPU over
// the throughput phase alone: "joined {json}" once every stream has joined; it then
// waits for a line on stdin; "throughput {json}" after the drain; it then waits again;
// "done {json}" at the end.
//
// Built by benchmarks/gofanout.py (GOPATH mode, Debian's Go packages).
package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	pb "securechat/v1/chatpb"
)

const room = "bench"

type stream struct {
	send     func(*pb.ChatMessage) error
	ended    atomic.Value // the error that ended the stream, if the server did
	received int64        // MESSAGE events taken, atomically
	joined   chan struct{}
	once     sync.Once
	record   int32 // 1 during the light phase
	mu       sync.Mutex
	lat      []float64
	sizes    map[int]int64
}

func (s *stream) take(e *pb.ChatEvent) {
	if e.GetKind() != pb.ChatEvent_MESSAGE {
		return
	}
	if atomic.AddInt64(&s.received, 1) == 1 {
		s.once.Do(func() { close(s.joined) })
	}
	if atomic.LoadInt32(&s.record) == 1 {
		parts := strings.SplitN(e.GetText(), " ", 3)
		if len(parts) >= 2 {
			if sent, err := strconv.ParseInt(parts[1], 10, 64); err == nil {
				ms := float64(time.Now().UnixNano()-sent) / 1e6
				s.mu.Lock()
				s.lat = append(s.lat, ms)
				s.mu.Unlock()
			}
		}
	}
}

func (s *stream) size(n int) {
	s.mu.Lock()
	s.sizes[n]++
	s.mu.Unlock()
}

func open(ctx context.Context, conn *grpc.ClientConn, batched bool) (*stream, error) {
	client := pb.NewChatServiceClient(conn)
	s := &stream{joined: make(chan struct{}), sizes: map[int]int64{}}
	if batched {
		call, err := client.ChatBatched(ctx)
		if err != nil {
			return nil, err
		}
		s.send = call.Send
		go func() {
			for {
				batch, err := call.Recv()
				if err != nil {
					s.ended.Store(err.Error())
					return
				}
				s.size(len(batch.GetEvents()))
				for _, e := range batch.GetEvents() {
					s.take(e)
				}
			}
		}()
		return s, nil
	}
	call, err := client.Chat(ctx)
	if err != nil {
		return nil, err
	}
	s.send = call.Send
	go func() {
		for {
			e, err := call.Recv()
			if err != nil {
				s.ended.Store(err.Error())
				return
			}
			s.size(1)
			s.take(e)
		}
	}()
	return s, nil
}

func dial(addr string, ca *x509.CertPool, cert tls.Certificate) *grpc.ClientConn {
	creds := credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca, ServerName: "localhost"})
	conn, err := grpc.Dial(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		log.Fatalf("fanload: dial %s: %v", addr, err)
	}
	return conn
}

func total(streams []*stream) int64 {
	var n int64
	for _, s := range streams {
		n += atomic.LoadInt64(&s.received)
	}
	return n
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Sec+ru.Stime.Sec) + float64(ru.Utime.Usec+ru.Stime.Usec)/1e6
}

func say(stdin *bufio.Reader, tag string, v map[string]interface{}) {
	out, _ := json.Marshal(v)
	fmt.Printf("%s %s\n", tag, out)
	if stdin != nil {
		if _, err := stdin.ReadString('\n'); err != nil {
			log.Fatalf("fanload: stdin closed: %v", err)
		}
	}
}

func main() {
	addrs := flag.String("addrs", "", "comma-separated HOST:PORT of the servers")
	caFile := flag.String("ca", "", "CA the servers' certificates chain to")
	certDir := flag.String("certs", "", "directory of client certificates c0.pem, c0-key.pem, ...")
	nStreams := flag.Int("streams", 100, "streams")
	nConns := flag.Int("connections", 10, "connections")
	senders := flag.Int("senders", 2, "senders")
	window := flag.Int("window", 16, "messages in flight per sender")
	seconds := flag.Float64("seconds", 3, "throughput phase")
	rate := flag.Float64("light-rate", 20, "light phase: messages/s offered")
	lightSeconds := flag.Float64("light-seconds", 3, "light phase length")
	joinBatch := flag.Int("join-batch", 500, "streams opened at once")
	batched := flag.Bool("batched", false, "ChatBatched instead of Chat")
	maxLag := flag.Int("max-lag", 1024, "messages the senders may be ahead of the slowest member")
	flag.Parse()

	caPEM, err := ioutil.ReadFile(*caFile)
	if err != nil {
		log.Fatalf("fanload: %v", err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	var certs []tls.Certificate
	for i := 0; ; i++ {
		pair, err := tls.LoadX509KeyPair(filepath.Join(*certDir, fmt.Sprintf("c%d.pem", i)), filepath.Join(*certDir, fmt.Sprintf("c%d-key.pem", i)))
		if err != nil {
			break
		}
		certs = append(certs, pair)
	}
	if len(certs) == 0 {
		log.Fatalf("fanload: no client certificates in %s", *certDir)
	}
	servers := strings.Split(*addrs, ",")
	conns := make([]*grpc.ClientConn, *nConns)
	for c := range conns {
		conns[c] = dial(servers[c%len(servers)], pool, certs[c%len(certs)])
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdin := bufio.NewReader(os.Stdin)

	started := time.Now()
	var streams []*stream
	var probes int64
	for start := 0; start < *nStreams; start += *joinBatch {
		end := start + *joinBatch
		if end > *nStreams {
			end = *nStreams
		}
		batch := make([]*stream, 0, end-start)
		for i := start; i < end; i++ {
			s, err := open(ctx, conns[i%len(conns)], *batched)
			if err != nil {
				log.Fatalf("fanload: stream %d: %v", i, err)
			}
			if err := s.send(&pb.ChatMessage{Room: room}); err != nil {
				log.Fatalf("fanload: join %d: %v", i, err)
			}
			batch = append(batch, s)
		}
		streams = append(streams, batch...)
		giveUp := time.Now().Add(300 * time.Second)
		for {
			all := true
			for _, s := range batch {
				select {
				case <-s.joined:
				default:
					all = false
				}
			}
			if all {
				break
			}
			if time.Now().After(giveUp) {
				log.Fatalf("fanload: streams did not join")
			}
			streams[0].send(&pb.ChatMessage{Room: room, Text: fmt.Sprintf("-1 %d probe", time.Now().UnixNano())})
			probes++
			pause := time.Duration(float64(len(streams)) / 4000 * float64(time.Second))
			if pause < 100*time.Millisecond {
				pause = 100 * time.Millisecond
			}
			time.Sleep(pause)
		}
	}
	connectSeconds := time.Since(started).Seconds()
	time.Sleep(500 * time.Millisecond) // the last probes arrive
	for _, s := range streams {
		s.mu.Lock()
		s.sizes = map[int]int64{}
		s.mu.Unlock()
	}
	base := make([]int64, len(streams))
	for i, s := range streams {
		base[i] = atomic.LoadInt64(&s.received)
	}
	say(stdin, "joined", map[string]interface{}{"connect_seconds": connectSeconds})

	// Throughput.
	cpu0, t0 := cpuSeconds(), time.Now()
	deadline := t0.Add(time.Duration(*seconds * float64(time.Second)))
	var sent, posting, slowest int64
	// The senders never run more than -max-lag messages ahead of the slowest member: a
	// server is measured at what it sustains for every member, not pushed into dropping one.
	stop := make(chan struct{})
	go func() {
		for {
			low := int64(-1)
			for i, s := range streams {
				if s.ended.Load() == nil {
					if got := atomic.LoadInt64(&s.received) - base[i]; low < 0 || got < low {
						low = got
					}
				}
			}
			atomic.StoreInt64(&slowest, low)
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
		}
	}()
	var wg sync.WaitGroup
	for i := 0; i < *senders; i++ {
		wg.Add(1)
		go func(s *stream, own int64) {
			defer wg.Done()
			var mine int64
			for time.Now().Before(deadline) {
				for mine-(atomic.LoadInt64(&s.received)-own) >= int64(*window) || atomic.LoadInt64(&posting)-atomic.LoadInt64(&slowest) >= int64(*maxLag) {
					time.Sleep(500 * time.Microsecond)
					if !time.Now().Before(deadline) || s.ended.Load() != nil {
						atomic.AddInt64(&sent, mine)
						return
					}
				}
				if err := s.send(&pb.ChatMessage{Room: room, Text: fmt.Sprintf("%d %d x", mine, time.Now().UnixNano())}); err != nil {
					break // the server ended this stream: it is counted in "ended"
				}
				mine++
				atomic.AddInt64(&posting, 1)
			}
			atomic.AddInt64(&sent, mine)
		}(streams[i], base[i])
	}
	wg.Wait()
	close(stop)
	posted := sent
	var before int64
	for _, b := range base {
		before += b
	}
	drainFor := time.Duration(float64(posted)*float64(len(streams))/5000) * time.Second
	if drainFor < 30*time.Second {
		drainFor = 30 * time.Second
	}
	drainTo := func(p int64) {
		// A stream's target is what it had at the start plus what was posted since.
		deadline := time.Now().Add(drainFor)
		for time.Now().Before(deadline) {
			behind := false
			for i, s := range streams {
				if s.ended.Load() == nil && atomic.LoadInt64(&s.received)-base[i] < p {
					behind = true // a stream the server ended waits for nothing more: its shortfall is lost
					break
				}
			}
			if !behind {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	drainTo(posted)
	elapsed := time.Since(t0).Seconds()
	deliveries := total(streams) - before
	throughput := map[string]interface{}{
		"sent": sent, "deliveries": deliveries, "elapsed": elapsed, "client_cpu_seconds": cpuSeconds() - cpu0,
		"sizes": sizes(streams),
	}
	for _, s := range streams {
		s.mu.Lock()
		s.sizes = map[int]int64{}
		s.mu.Unlock()
	}
	say(stdin, "throughput", throughput)

	// Light load: latency.
	for _, s := range streams {
		atomic.StoreInt32(&s.record, 1)
	}
	interval := time.Duration(float64(*senders) / *rate * float64(time.Second))
	var light int64
	t1 := time.Now()
	for time.Since(t1).Seconds() < *lightSeconds {
		for i := 0; i < *senders; i++ {
			_ = streams[i].send(&pb.ChatMessage{Room: room, Text: fmt.Sprintf("%d %d light", light, time.Now().UnixNano())})
			light++
		}
		time.Sleep(interval)
	}
	posted += light
	drainTo(posted)
	var lat []float64
	var lost int64
	for i, s := range streams {
		s.mu.Lock()
		lat = append(lat, s.lat...)
		s.mu.Unlock()
		lost += posted - (atomic.LoadInt64(&s.received) - base[i])
	}
	ended := map[string]int{}
	for _, s := range streams {
		if why, ok := s.ended.Load().(string); ok {
			ended[why]++
		}
	}
	sort.Float64s(lat)
	rounded := make([]float64, len(lat))
	for i, v := range lat {
		rounded[i] = float64(int64(v*1000)) / 1000
	}
	say(nil, "done", map[string]interface{}{
		"p50_ms": pct(lat, 50), "p99_ms": pct(lat, 99), "lost": lost, "light_sizes": sizes(streams), "probes": probes,
		"latencies_ms": rounded, "ended": ended,
	})
}

func sizes(streams []*stream) map[string]int64 {
	out := map[string]int64{}
	for _, s := range streams {
		s.mu.Lock()
		for k, v := range s.sizes {
			out[strconv.Itoa(k)] += v
		}
		s.mu.Unlock()
	}
	return out
}

func pct(values []float64, p float64) float64 {
	if len(values) == 0 {
		return -1
	}
	i := int(float64(len(values)) * p / 100)
	if i >= len(values) {
		i = len(values) - 1
	}
	return values[i]
}
