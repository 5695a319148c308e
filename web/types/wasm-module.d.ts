/** A worker's import of a `.wasm` file: the compiled module (workerd's `CompiledWasm`). */
declare module '*.wasm' {
  const module: WebAssembly.Module;
  export default module;
}
