package omqs_test

import (
	"context"
	"fmt"
	"os"

	"github.com/omqs-go/omqs"
)

func ExampleNewLogManager() {
	// The [Log] section of OMQS.cfg, here given in code. The format has no
	// %(asctime)s so that the output below is always the same.
	cfg := omqs.DefaultConfig().Log
	cfg.Format = "[OMQS] %(levelname) -8s %(name)s: %(message)s"
	lm, err := omqs.NewLogManager("YourModule", "YourModule.log",
		omqs.WithLogConfig(cfg), omqs.WithLogOutput(os.Stdout))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer lm.Close()

	log := lm.Logger()
	log.Info("info test")
	log.Debug("debug test") // below LEVEL=INFO: not printed

	if err := lm.SetLevel("DEBUG"); err != nil {
		fmt.Println(err)
	}
	log.Debug("debug test 2", "user", 42)
	log.Log(context.Background(), omqs.LevelFatal, "fatal test")
	log.Info("connecting", "url", omqs.RedactedURL("amqp://guest:guest@localhost:5672/"))

	fmt.Println(lm.SetLevel("LOUD"))
	// Output:
	// [OMQS] INFO     YourModule: info test
	// [OMQS] DEBUG    YourModule: debug test 2 user=42
	// [OMQS] CRITICAL YourModule: fatal test
	// [OMQS] INFO     YourModule: connecting url=amqp://guest:xxxxx@localhost:5672/
	// omqs: invalid configuration: log level "LOUD": want DEBUG, INFO, WARNING, ERROR or FATAL
}
