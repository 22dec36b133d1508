package memory_test

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/streamhub/streamhub/engine"
	"github.com/streamhub/streamhub/engine/enginetest"
	"github.com/streamhub/streamhub/engine/memory"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestConformance(t *testing.T) {
	enginetest.Run(t, func(t *testing.T, b engine.Bounds, h engine.Handler) engine.Engine {
		e, err := memory.New(memory.Options{Bounds: b, Handler: h})
		if err != nil {
			t.Fatalf("New: %v", err)
		}
		return e
	})
}

func TestClientsConformance(t *testing.T) {
	enginetest.RunClients(t, func(t *testing.T) enginetest.NewInstance {
		shared := memory.NewClients()
		return func(t *testing.T, instance string, h engine.Handler) engine.Engine {
			e, err := memory.New(memory.Options{Bounds: engine.Bounds{Size: 10}, Handler: h, Instance: instance, Clients: shared})
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			return e
		}
	})
}
