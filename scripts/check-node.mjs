// The Node majors the server runs and is tested on: uWebSockets.js 20.57 ships native builds for Node 20, 22, 24 and
// 25 (ABI 115, 127, 137, 141); 20, 22 and 24 (the LTS lines) are the ones tested. Keep in step with server/serve.ts.
const supported = [20, 22, 24];
const major = Number(process.versions.node.split('.')[0]);
if (!supported.includes(major)) {
  console.error(
    `This server needs Node.js ${supported.join(', ')} (found ${process.versions.node}): the others are not tested.`,
  );
  process.exit(1);
}
