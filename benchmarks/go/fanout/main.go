// A straightforward grpc-go fan-out server: the benchmark's peer from another runtime.
//
// Same proto and mTLS as securechat. Written the way grpc-go's examples
// suggest: one goroutine per stream reading messages, a per-member buffered
// channel of *ChatEvent, and the stream's handler calling Send for each event
// (so grpc-go serializes every event once per member, like the grpc.aio
// baseline). Ids come from one counter under the room lock, which also keeps
// one order per room. A member whose channel is full is ended with
// RESOURCE_EXHAUSTED. No history, limits or resume: only the fan-out.
//
// Built by benchmarks/gofanout.py (GOPATH mode, Debian's Go packages):
//
//	fanout -listen 127.0.0.1:50053 -cert server.pem -key server-key.pem -ca ca.pem
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io/ioutil"
	"log"
	"net"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "securechat/v1/chatpb"
)

const queueSize = 4096 // as securechat's and the baseline's member queues in the benchmark

type member struct {
	events chan *pb.ChatEvent
	full   chan struct{} // closed when the member could not keep up
	once   sync.Once
}

type server struct {
	pb.UnimplementedChatServiceServer
	mu     sync.Mutex
	nextID int64
	rooms  map[string]map[*member]struct{}
}

func name(s grpc.ServerStream) string {
	if p, ok := peer.FromContext(s.Context()); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.PeerCertificates) > 0 {
			return info.State.PeerCertificates[0].Subject.CommonName
		}
	}
	return "anonymous"
}

func (s *server) SayHello(_ context.Context, req *pb.HelloRequest) (*pb.HelloReply, error) {
	n := req.GetName()
	if n == "" {
		n = "stranger"
	}
	return &pb.HelloReply{Message: "Hello, " + n + "!"}, nil
}

func (s *server) Chat(stream pb.ChatService_ChatServer) error {
	sender := name(stream)
	m := &member{events: make(chan *pb.ChatEvent, queueSize), full: make(chan struct{})}
	joined := map[string]bool{}
	readDone := make(chan error, 1)
	defer func() {
		s.mu.Lock()
		for room := range joined {
			delete(s.rooms[room], m)
		}
		s.mu.Unlock()
	}()
	go func() {
		for {
			msg, err := stream.Recv()
			if err != nil {
				readDone <- err
				return
			}
			room := msg.GetRoom()
			if room == "" {
				room = "general"
			}
			s.mu.Lock()
			if !joined[room] {
				joined[room] = true
				if s.rooms[room] == nil {
					s.rooms[room] = map[*member]struct{}{}
				}
				s.rooms[room][m] = struct{}{}
			}
			if msg.GetText() != "" {
				s.nextID++
				event := &pb.ChatEvent{
					Id: strconv.FormatInt(s.nextID, 10), Room: room, Sender: sender, Text: msg.GetText(),
					SentAtUnixMs: time.Now().UnixNano() / 1e6, Kind: pb.ChatEvent_MESSAGE,
				}
				for other := range s.rooms[room] {
					select {
					case other.events <- event:
					default:
						other.once.Do(func() { close(other.full) })
					}
				}
			}
			s.mu.Unlock()
		}
	}()
	for {
		select {
		case event := <-m.events:
			if err := stream.Send(event); err != nil {
				return err
			}
		case <-m.full:
			return status.Error(codes.ResourceExhausted, "slow consumer")
		case <-readDone:
			// The client half-closed (or broke): write what is queued, then end.
			for {
				select {
				case event := <-m.events:
					if err := stream.Send(event); err != nil {
						return err
					}
				default:
					return nil
				}
			}
		case <-stream.Context().Done():
			return stream.Context().Err()
		}
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:50053", "HOST:PORT")
	certFile := flag.String("cert", "", "server certificate (PEM); empty: plaintext")
	keyFile := flag.String("key", "", "server key (PEM)")
	caFile := flag.String("ca", "", "CA that client certificates must chain to")
	flag.Parse()
	var opts []grpc.ServerOption
	if *certFile != "" {
		pair, err := tls.LoadX509KeyPair(*certFile, *keyFile)
		if err != nil {
			log.Fatalf("fanout: %s: %v", *certFile, err)
		}
		caPEM, err := ioutil.ReadFile(*caFile)
		if err != nil {
			log.Fatalf("fanout: %s: %v", *caFile, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			log.Fatalf("fanout: %s: no certificate found", *caFile)
		}
		opts = append(opts, grpc.Creds(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{pair}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert,
		})))
	}
	lis, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatalf("fanout: %v", err)
	}
	srv := grpc.NewServer(opts...)
	pb.RegisterChatServiceServer(srv, &server{rooms: map[string]map[*member]struct{}{}})
	fmt.Printf("grpc-go fan-out listening on %s\n", *listen)
	log.Fatal(srv.Serve(lis))
}
