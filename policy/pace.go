package policy

import "time"

// MaxCompileWait bounds how long a change of pods waits for the policies
// to be compiled again with it: how late a new pod elsewhere may be
// admitted by a policy that selects it.
const MaxCompileWait = 2 * time.Second

// CompileWait is how long changes of pods (other nodes' pods, or the
// Kubernetes API's) wait before the policies are compiled again with
// them, when the last compile took took and ended since ago: ten times
// took after that end, at most MaxCompileWait. Each compile reads every
// pod in the fabric, and a large fabric's pods change several times a
// second; compiling on each change kept agents busy most of the time at
// 100,000 pods. Paced, compiling costs about a tenth of a core however
// large the fabric, while a change that comes after a quiet spell, and
// any change in a small fabric, is compiled at once.
func CompileWait(took, since time.Duration) time.Duration {
	return max(0, min(10*took, MaxCompileWait)-since)
}

// NewsWait is CompileWait for pods this node's policies wait for: pods
// another node sent straight here as they were attached or relabelled
// (see Watchers), whose first packets follow at once. They wait once
// took after the last compile's end rather than ten times, so that in a
// burst of such pods (a deployment scaled up) most are admitted before
// their first packet, dropped, is sent again a second later; a burst
// keeps compiling at most half a core busy, and only on the nodes the
// pods' policies name.
func NewsWait(took, since time.Duration) time.Duration {
	return max(0, min(took, MaxCompileWait)-since)
}
