package client_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"time"

	"github.com/streamhub/streamhub/client"
	streampb "github.com/streamhub/streamhub/gen/grpc/stream_service/pb"
	streamsvr "github.com/streamhub/streamhub/gen/grpc/stream_service/server"
	streamsvc "github.com/streamhub/streamhub/gen/stream_service"
	"github.com/streamhub/streamhub/streaming"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Subscribe to a session and publish to it. The events are read on their
// own goroutine, so that a call waiting for the server is never stuck
// behind unread events.
func Example() {
	addr, stop := startStreamHub() // a StreamHub server, e.g. "localhost:50051"
	defer stop()

	ctx := context.Background()
	c, err := client.Dial(ctx, addr, client.WithClientID("alice"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	received := make(chan *client.Message)
	go func() {
		for ev := range c.Events() {
			if m, ok := ev.(*client.Message); ok {
				received <- m
			}
		}
	}()

	if _, err := c.Join(ctx, "lobby"); err != nil {
		log.Fatal(err)
	}
	seq, err := c.Publish(ctx, "lobby", "hello-1", []byte("hello"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("published at seq", seq)
	m := <-received
	fmt.Printf("[%s #%d] %s: %s\n", m.Session, m.Seq, m.Sender, m.Data)
	// Output:
	// published at seq 1
	// [lobby #1] alice: hello
}

// Handle every kind of event: messages, joins (and whether a rejoin
// recovered everything), refusals and connection state.
func ExampleClient_Events() {
	c, err := client.Dial(context.Background(), "localhost:50051", client.WithClientID("dashboard"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	for ev := range c.Events() {
		switch ev := ev.(type) {
		case *client.Message:
			fmt.Printf("%s #%d from %s: %s\n", ev.Session, ev.Seq, ev.Sender, ev.Data)
		case *client.Joined:
			if !ev.Recovered {
				fmt.Printf("%s: some messages were lost while disconnected\n", ev.Session)
			}
		case *client.ServerError:
			fmt.Println("refused:", ev.Reason)
		case *client.StateChange:
			switch ev.State {
			case client.StateReconnecting:
				fmt.Println("reconnecting:", status.Code(ev.Cause), ev.Cause)
			case client.StateConnected:
				fmt.Println("connected as", ev.ClientID)
			case client.StateClosed:
				if errors.Is(ev.Cause, client.ErrReplaced) {
					fmt.Println("another process took this client ID over")
				}
			}
		}
	}
}

// Resume where an earlier process left off: save the position of each
// message handled, and join from it.
func ExampleFrom() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "localhost:50051", client.WithClientID("worker-7"))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()

	seq, epoch := loadPosition() // e.g. from a file; 0, "" the first time
	j, err := c.Join(ctx, "orders", client.From(seq, epoch))
	if err != nil {
		log.Fatal(err)
	}
	if !j.Recovered {
		log.Printf("orders: history no longer holds everything after %d", seq)
	}
	for ev := range c.Events() {
		if m, ok := ev.(*client.Message); ok {
			handle(m)
			savePosition(m.Seq, m.Epoch)
		}
	}
}

// Publish without waiting for each delivery: publications go out in call
// order, and each completes when its own delivery comes back, across
// reconnects.
func ExampleClient_PublishAsync() {
	ctx := context.Background()
	c, err := client.Dial(ctx, "localhost:50051",
		client.WithClientID("ticker"),
		client.WithBackoff(100*time.Millisecond, 5*time.Second))
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	go func() {
		for range c.Events() { // keep reading: deliveries come through here
		}
	}()

	var pubs []*client.Publication
	for i := range 100 {
		p, err := c.PublishAsync(ctx, "prices", fmt.Sprintf("tick-%d", i), []byte("42.0"))
		if err != nil {
			log.Fatal(err)
		}
		pubs = append(pubs, p)
	}
	for _, p := range pubs {
		if _, err := p.Wait(ctx); err != nil {
			log.Printf("%s: %v", p.ID(), err)
		}
	}
}

func handle(*client.Message)         {}
func loadPosition() (uint64, string) { return 0, "" }
func savePosition(uint64, string)    {}

// startStreamHub serves StreamHub on a loopback port for the examples that
// run, and returns its address and how to stop it.
func startStreamHub() (addr string, stop func()) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	svc := streaming.New(streaming.Config{})
	gs := grpc.NewServer()
	streampb.RegisterStreamServiceServer(gs, streamsvr.New(streamsvc.NewEndpoints(svc), nil))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(lis)
	}()
	return lis.Addr().String(), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = svc.Shutdown(ctx)
		gs.GracefulStop()
		<-done
	}
}
