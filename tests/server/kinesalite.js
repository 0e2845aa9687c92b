// Starts kinesalite on 127.0.0.1 only. Usage: node kinesalite.js PORT
// Prints "listening PORT" on stdout once it accepts connections, so that
// the test harness and the demo script know when to go on.
'use strict';
const kinesalite = require('kinesalite');
const port = parseInt(process.argv[2] || '4567', 10);
const server = kinesalite({ createStreamMs: 0, deleteStreamMs: 0, updateStreamMs: 0, shardLimit: 1000 });
server.listen(port, '127.0.0.1', (err) => {
  if (err) { console.error(err); process.exit(1); }
  console.log('listening ' + server.address().port);
});
