// No request, no step: what instantiating and running a JavaScript journey
// costs by itself (bench/languages).
export function run() {}
