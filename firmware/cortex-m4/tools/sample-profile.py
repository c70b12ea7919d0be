#!/usr/bin/env python3
"""Sampling profiler for the firmware under QEMU (session 11).

Stops the guest through QEMU's gdb stub at random wall-clock instants, reads
the program counter and link register, and prints the functions the samples
fell in (and with their callers, as far as the link register tells; it is
stale in a leaf that saved it). Under `-icount shift=0` wall time is spent
in proportion to instructions executed, so the shares approximate where the
instructions go.

    qemu-system-arm -machine mps2-an386 -cpu cortex-m4 -nographic -icount shift=0 \
      -semihosting-config enable=on,target=native,arg=tally-m4,arg=long,arg=profile \
      -kernel target/firmware/thumbv7em-none-eabihf/release/tally-m4 -gdb tcp::1234 > run.log &
    # wait for "PROFILE START" in run.log (the benchmark firmware then boots the
    # meter from its journal in a loop), then:
    firmware/cortex-m4/tools/sample-profile.py 1234 1500 target/firmware/thumbv7em-none-eabihf/release/tally-m4
    pkill qemu-system-arm

Needs llvm-symbolizer-14 (Debian llvm-14).
"""
import socket, sys, time, random, subprocess, collections
port=int(sys.argv[1]); n=int(sys.argv[2]); elf=sys.argv[3]
s=socket.create_connection(('127.0.0.1',port))
def pkt(data):
    cs=sum(data.encode())&0xff
    s.sendall(b'$'+data.encode()+b'#%02x'%cs)
buf=b''
def recv():
    global buf
    while True:
        i=buf.find(b'$')
        if i>=0:
            j=buf.find(b'#',i)
            if j>=0 and len(buf)>=j+3:
                d=buf[i+1:j]; buf=buf[j+3:]
                s.sendall(b'+'); return d.decode()
        c=s.recv(4096)
        if not c: raise SystemExit('closed')
        buf+=c
pcs=[]
pkt('c')
for k in range(n):
    time.sleep(random.uniform(0.04,0.08))
    s.sendall(b'\x03'); recv()
    pkt('g'); r=recv()
    while not all(ch in '0123456789abcdefx' for ch in r[:128]): r=recv()
    regs=[int.from_bytes(bytes.fromhex(r[i*8:i*8+8]),'little') for i in range(16)]
    pc=regs[15]; lr=regs[14]
    pcs.append((pc,lr))
    pkt('c')
addrs='\n'.join('0x%x'%(p&~1) for p,_ in pcs)
out=subprocess.run(['llvm-symbolizer-14','--obj='+elf,'--functions=linkage','--inlining=false','-C'],input=addrs,capture_output=True,text=True).stdout
names=[b.split('\n')[0] for b in out.strip().split('\n\n')]
c=collections.Counter(names)
for name,cnt in c.most_common(40): print('%5d %5.1f%% %s'%(cnt,100*cnt/len(names),name[:150]))
addrs='\n'.join('0x%x'%((l&~1)-2) for _,l in pcs)
out=subprocess.run(['llvm-symbolizer-14','--obj='+elf,'--functions=linkage','--inlining=false','-C'],input=addrs,capture_output=True,text=True).stdout
names2=[b.split('\n')[0] for b in out.strip().split('\n\n')]
c=collections.Counter(zip(names,names2))
print('--- with caller (lr)')
for (a,b),cnt in c.most_common(40): print('%5d %s <- %s'%(cnt,a[:80],b[:90]))
