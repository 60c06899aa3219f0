/* nitro_mcu board: UART console (compiled to nothing unless BOARD_IO_UART).
 *   -DBOARD_UART_CMSDK  CMSDK APB UART (mps2-an385/an386/an500 at 0x40004000, an505 Secure at 0x50200000)
 *   -DBOARD_UART_NRF51  nRF51 UART (microbit at 0x40002000)
 *   -DBOARD_UART_STM32  STM32F2/F4 USART2 at 0x40004400 (PA2 = TX, 16 MHz HSI, 115200 baud): the stm32f405
 *                       and stm32f205 targets run it on QEMU's netduinoplus2 and netduino2 (SoC models); the
 *                       STM32F4-Discovery build (stm32f407) is the same code and runs on Renode's STM32F4 Discovery
 *                       model (tests/test_emulator.py)
 *   -DBOARD_UART_NS16550 16550-compatible UART, byte registers (QEMU virt RISC-V at 0x10000000)
 *   -DBOARD_UART_BASE=0x...u
 * Exit and file I/O go through semihosting (board_semihost.c), except on a part built with
 * BOARD_NO_SEMIHOST, whose exit is a line on this console. */
#include <stdint.h>
#include "board.h"

#if defined(BOARD_IO_UART)

#ifndef BOARD_UART_BASE
#error "BOARD_IO_UART needs -DBOARD_UART_BASE=0x...u"
#endif

#define REG(off) (*(volatile uint32_t *)((uintptr_t)(BOARD_UART_BASE) + (off)))

#if defined(BOARD_UART_CMSDK)
void board_init(void)
{
    REG(0x10u) = 16u;   /* BAUDDIV */
    REG(0x08u) = 1u;    /* CTRL: TX enable */
}

void board_putc(char c)
{
    while ((REG(0x04u) & 1u) != 0u) {   /* STATE bit 0: TX buffer full */
    }
    REG(0x00u) = (uint32_t)(uint8_t)c;
}
#elif defined(BOARD_UART_NRF51)
void board_init(void)
{
    REG(0x500u) = 4u;   /* ENABLE */
    REG(0x008u) = 1u;   /* TASKS_STARTTX */
}

void board_putc(char c)
{
    REG(0x11Cu) = 0u;                   /* EVENTS_TXDRDY */
    REG(0x51Cu) = (uint32_t)(uint8_t)c; /* TXD */
    while (REG(0x11Cu) == 0u) {
    }
}
#elif defined(BOARD_UART_STM32)
#define RCC_AHB1ENR (*(volatile uint32_t *)0x40023830u)
#define RCC_APB1ENR (*(volatile uint32_t *)0x40023840u)
#define GPIOA_MODER (*(volatile uint32_t *)0x40020000u)
#define GPIOA_AFRL  (*(volatile uint32_t *)0x40020020u)
void board_init(void)
{
    RCC_AHB1ENR |= 1u;                                   /* GPIOA clock */
    RCC_APB1ENR |= 1u << 17;                             /* USART2 clock */
    GPIOA_MODER = (GPIOA_MODER & ~(3u << 4)) | (2u << 4); /* PA2: alternate function */
    GPIOA_AFRL = (GPIOA_AFRL & ~(0xFu << 8)) | (7u << 8); /* AF7 = USART2 */
    REG(0x08u) = 139u;                                   /* BRR: 16 MHz / 115200 */
    REG(0x0Cu) = (1u << 13) | (1u << 3);                 /* CR1: UE | TE */
}

void board_putc(char c)
{
    while ((REG(0x00u) & (1u << 7)) == 0u) {             /* SR.TXE */
    }
    REG(0x04u) = (uint32_t)(uint8_t)c;                   /* DR */
}
#elif defined(BOARD_UART_NS16550)
#define REG8(off) (*(volatile uint8_t *)((uintptr_t)(BOARD_UART_BASE) + (off)))
void board_init(void)
{
    REG8(0x3u) = 0x03u;   /* LCR: 8 data bits, no parity, 1 stop bit */
    REG8(0x2u) = 0x01u;   /* FCR: FIFOs on */
}

void board_putc(char c)
{
    while ((REG8(0x5u) & 0x20u) == 0u) {   /* LSR.THRE: transmit holding register empty */
    }
    REG8(0x0u) = (uint8_t)c;              /* THR */
}
#else
#error "BOARD_IO_UART needs -DBOARD_UART_CMSDK, -DBOARD_UART_NRF51, -DBOARD_UART_STM32 or -DBOARD_UART_NS16550"
#endif

void board_puts(const char *s)
{
    while (*s != '\0') {
        board_putc(*s++);
    }
}

#else
/* Semihosting console build: nothing here (keeps the translation unit non-empty). */
typedef int board_uart_unused_t;
#endif
