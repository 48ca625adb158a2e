"""Running a model: `model` (`edgert.load`, `Model`), the interpreter `backend` (ai_edge_litert or
tflite_runtime), `delegation` (delegates tried in order, with an honest fallback), `plugins` (entry-point
registries), `preflight` (`edgert.check`: what each delegate takes, from the file alone), `arrays` (inputs from
.npy/.npz, layouts) and `native` (loading shared libraries). Above the parser and the plugin folders; below
measurement, the tasks and everything that serves or deploys."""
